"""Passwords and client secrets are hashed, TOTP keys encrypted, and none of them ever returned."""

from __future__ import annotations

import base64

from starlette.testclient import TestClient

SECRET_B32 = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def _stored(api: TestClient, resource_type: str, id: str) -> dict:
    stored = api.portal.call(api.app.state.services.storage.get, resource_type, id)  # type: ignore[union-attr]
    return stored.document


def test_user_secrets_are_protected_and_never_returned(api: TestClient) -> None:
    body = {
        "resourceType": "User",
        "email": "s@example.org",
        "password": "correct horse battery staple",
        "twoFactor": {"enabled": True, "secretKey": SECRET_B32, "transport": "sms"},
    }
    created = api.put("/User/s", json=body)
    assert created.status_code == 201
    for response in (created, api.get("/User/s"), api.get("/User/s/_history/1")):
        text = response.text
        assert "password" not in text
        assert "secretKey" not in text
        assert SECRET_B32 not in text
    assert created.json()["twoFactor"] == {"enabled": True, "transport": "sms"}
    stored = _stored(api, "User", "s")
    assert stored["password"].startswith("$argon2id$")
    assert SECRET_B32 not in str(stored)
    assert stored["twoFactor"]["secretKey"] != SECRET_B32
    search = api.get("/User?email=s@example.org").text
    assert "argon2" not in search and "secretKey" not in search


def test_secrets_survive_an_update_that_leaves_them_out(api: TestClient) -> None:
    api.put(
        "/User/k",
        json={
            "resourceType": "User",
            "password": "pw-1-long-enough",
            "twoFactor": {"enabled": True, "secretKey": SECRET_B32},
        },
    )
    before = _stored(api, "User", "k")
    api.put(
        "/User/k", json={"resourceType": "User", "email": "k@example.org", "twoFactor": {"enabled": True}}
    )
    after = _stored(api, "User", "k")
    assert after["password"] == before["password"]
    assert after["twoFactor"]["secretKey"] == before["twoFactor"]["secretKey"]
    api.patch("/User/k", json={"userName": "kay"})
    assert _stored(api, "User", "k")["password"] == before["password"]


def test_client_secret_is_hashed(api: TestClient) -> None:
    res = api.put(
        "/Client/c", json={"resourceType": "Client", "secret": "client-secret", "grant_types": ["basic"]}
    )
    assert "secret" not in res.json()
    assert _stored(api, "Client", "c")["secret"].startswith("$argon2id$")
    assert api.get("/Client?secret=client-secret").status_code == 400
    token = base64.b64encode(b"c:client-secret").decode()
    assert api.get("/User", headers={"Authorization": f"Basic {token}"}).status_code == 403


def test_secret_key_must_be_base32(api: TestClient) -> None:
    res = api.put(
        "/User/bad", json={"resourceType": "User", "twoFactor": {"enabled": True, "secretKey": "not base32!"}}
    )
    assert res.status_code == 422
    assert api.get("/User/bad").status_code == 404


def test_smtp_password_is_never_returned(api: TestClient) -> None:
    provider = {
        "resourceType": "AidboxConfig",
        "provider": {
            "default": "mail",
            "mail": {
                "type": "smtp",
                "host": "smtp.example.org",
                "port": 587,
                "username": "u",
                "password": "smtp-pass",
            },
        },
    }
    created = api.put("/AidboxConfig/provider", json=provider)
    assert created.status_code == 201
    for response in (created, api.get("/AidboxConfig/provider"), api.get("/AidboxConfig")):
        assert "smtp-pass" not in response.text
    assert _stored(api, "AidboxConfig", "provider")["provider"]["mail"]["password"] == "smtp-pass"
    # a read-modify-write of what callers see keeps the password
    visible = api.get("/AidboxConfig/provider").json()
    visible["provider"]["mail"]["port"] = 465
    api.put("/AidboxConfig/provider", json=visible)
    assert _stored(api, "AidboxConfig", "provider")["provider"]["mail"]["password"] == "smtp-pass"
    assert api.get("/AidboxConfig?provider.mail.password=smtp-pass").status_code == 400


def test_webhook_headers_are_write_only(api: TestClient) -> None:
    config = {
        "resourceType": "AuthConfig",
        "twoFactor": {
            "webhook": {
                "endpoint": "https://sms.example.org/",
                "headers": {"Authorization": "Basic Z2F0ZXdheQ=="},
            }
        },
    }
    assert "Z2F0ZXdheQ" not in api.put("/AuthConfig/app", json=config).text
    assert "Z2F0ZXdheQ" not in api.get("/AuthConfig/app").text
    visible = api.get("/AuthConfig/app").json()
    visible["twoFactor"]["issuerName"] = "Renamed"
    api.put("/AuthConfig/app", json=visible)
    stored = _stored(api, "AuthConfig", "app")["twoFactor"]["webhook"]
    assert stored["headers"] == {"Authorization": "Basic Z2F0ZXdheQ=="}

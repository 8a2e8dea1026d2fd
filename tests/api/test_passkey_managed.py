"""WebAuthnCredential is server-managed: a caller whose policies allow everything still cannot write
it (403, nothing stored); only the administrator (the root client) and the ceremonies do."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.api.conftest import NO_AUTH

CREDENTIAL = {
    "resourceType": "WebAuthnCredential",
    "user": {"resourceType": "User", "id": "ann"},
    "name": "Forged key",
    "credentialId": "AAAA",
    "publicKey": "pQECAyYgASFYIA",
    "signCount": 0,
    "userHandle": "aGFuZGxl",
}
REFUSAL = "WebAuthnCredential is written by the passkey ceremonies: only they and an administrator change it"


def _client_token(api: TestClient) -> dict[str, str]:
    """A client whose AccessPolicy allows every request."""
    api.put(
        "/Client/tool",
        json={"resourceType": "Client", "secret": "tool-secret", "grant_types": ["client_credentials"]},
    )
    api.put(
        "/AccessPolicy/tool-all",
        json={
            "resourceType": "AccessPolicy",
            "engine": "allow",
            "link": [{"resourceType": "Client", "id": "tool"}],
        },
    )
    token = api.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "tool", "client_secret": "tool-secret"},
        headers=NO_AUTH,
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _refused(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 403, response.text
    issue = response.json()["issue"][0]
    assert (issue["code"], issue["diagnostics"]) == ("forbidden", REFUSAL)


def test_only_the_administrator_writes_passkeys(api: TestClient) -> None:
    auth = _client_token(api)
    _refused(api.post("/WebAuthnCredential", json=CREDENTIAL, headers=auth))
    _refused(api.put("/WebAuthnCredential/k1", json=CREDENTIAL, headers=auth))
    assert api.get("/WebAuthnCredential/k1").status_code == 404
    # The administrator may (an import, a repair).
    assert api.put("/WebAuthnCredential/k1", json=CREDENTIAL).status_code == 201
    _refused(
        api.put("/WebAuthnCredential/k1", json={**CREDENTIAL, "signCount": 0, "name": "Mine"}, headers=auth)
    )
    _refused(api.patch("/WebAuthnCredential/k1", json={"signCount": 0}, headers=auth))
    _refused(api.delete("/WebAuthnCredential/k1", headers=auth))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "/WebAuthnCredential/k1"}}],
    }
    assert api.post("/", json=bundle, headers=auth).status_code == 403
    # Reading is a policy's call like any other: the public key is no secret.
    stored = api.get("/WebAuthnCredential/k1", headers=auth)
    assert (stored.status_code, stored.json()["name"], stored.json()["meta"]["versionId"]) == (
        200,
        "Forged key",
        "1",
    )
    assert api.delete("/WebAuthnCredential/k1").status_code == 200
    assert api.get("/WebAuthnCredential/k1").status_code == 410

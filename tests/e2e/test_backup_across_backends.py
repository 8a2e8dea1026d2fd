"""Backup and restore across backends, through the real commands: a dataset built over HTTP on a
SQLite server, `fhirauth export`, `fhirauth seed` into MongoDB, a server on MongoDB, and every way of
signing in still works with the same passwords, TOTP apps, recovery codes, client secrets and JWTs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from joserfc import jwt
from joserfc.jwk import KeySet
from support.server import (
    ROOT_CLIENT_SECRET,
    LiveServerFactory,
    StorageFor,
    fhirauth_command,
    fhirauth_environment,
)

from fhirauth.twofactor import totp

APP_SECRET = "app-client-secret-4f1c"
REPORTING_SECRET = "reporting-client-secret-9d2e"
PASSWORDS = {
    "ann": "ann-password-long-enough",
    "bob": "bob-password-long-enough",
    "cat": "cat-password-long-enough",
}
IMPORTED_TOTP_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def _fhirauth(storage: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fhirauth_command(*args),
        env=fhirauth_environment(storage),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _code(secret: str, steps_back: int = 0) -> str:
    return totp.code_at(secret, totp.step_at(time.time()) - steps_back)


def _password_grant(http: httpx2.Client, user: str, **extra: str) -> httpx2.Response:
    form = {"grant_type": "password", "username": f"{user}@example.org", "password": PASSWORDS[user], **extra}
    return http.post("/auth/token", data=form, auth=("app", APP_SECRET))


def test_a_full_dataset_moves_from_sqlite_to_mongodb_and_everyone_signs_in(
    live_server_factory: LiveServerFactory, storage_for: StorageFor, tmp_path: Path
) -> None:
    source = live_server_factory()
    with httpx2.Client(base_url=source.url) as http:
        root = ("root", ROOT_CLIENT_SECRET)
        resources: list[dict[str, Any]] = [
            {
                "resourceType": "Client",
                "id": "app",
                # First-party: it enrols a user in 2FA through the JSON operations.
                "first_party": True,
                "secret": APP_SECRET,
                "grant_types": ["password", "client_credentials", "refresh_token"],
                "auth": {
                    "password": {"refresh_token": True},
                    "client_credentials": {"token_format": "jwt", "access_token_expiration": 600},
                },
            },
            {
                "resourceType": "Client",
                "id": "reporting",
                "secret": REPORTING_SECRET,
                "grant_types": ["basic"],
            },
            {
                "resourceType": "AccessPolicy",
                "id": "reporting-reads-users",
                "engine": "matcho",
                "matcho": {"request-method": "get", "uri": "#^/User"},
                "link": [{"resourceType": "Client", "id": "reporting"}],
            },
            *(
                {"resourceType": "User", "id": user, "email": f"{user}@example.org", "password": password}
                for user, password in PASSWORDS.items()
            ),
        ]
        for resource in resources:
            assert (
                http.put(
                    f"/{resource['resourceType']}/{resource['id']}", json=resource, auth=root
                ).status_code
                == 201
            )
        # cat comes from Aidbox with an authenticator app already set up.
        cat_2fa = {"twoFactor": {"enabled": True, "secretKey": IMPORTED_TOTP_SECRET}}
        assert http.patch("/User/cat", json=cat_2fa, auth=root).status_code == 200
        # bob turns 2FA on through the demo app's JSON operations.
        bob_token = _password_grant(http, "bob").json()["access_token"]
        bearer = {"Authorization": f"Bearer {bob_token}"}
        uri = http.post("/app/auth/two-factor/request", json={}, headers=bearer).json()["uri"]
        bob_secret = parse_qs(urlsplit(uri).query)["secret"][0]
        # A code from the step before: the one bob's app shows next is still unused after the move.
        confirmed = http.post(
            "/app/auth/two-factor/confirm", json={"token": _code(bob_secret, 1)}, headers=bearer
        )
        assert confirmed.status_code == 200
        recovery_codes = confirmed.json()["recoveryCodes"]
        assert len(recovery_codes) == 10
        jwt_before = http.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("app", APP_SECRET)
        )
        jwt_before.raise_for_status()
        refresh_before = _password_grant(http, "ann").json()["refresh_token"]
        jwks_before = http.get("/.well-known/jwks.json").json()
    source.stop()

    backup = tmp_path / "backup.json"
    exported = _fhirauth(source.storage, "export", "--output", str(backup))
    assert exported.returncode == 0, exported.stderr
    assert backup.stat().st_mode & 0o777 == 0o600
    assert "and 2 storage records to" in exported.stderr

    target = storage_for("mongo")
    assert target is not None
    seeded = _fhirauth(target, "seed", str(backup))
    assert seeded.returncode == 0, seeded.stderr

    restored = live_server_factory(storage=target)
    with httpx2.Client(base_url=restored.url) as http:
        assert http.get("/.well-known/jwks.json").json() == jwks_before
        published = KeySet.import_key_set(jwks_before)
        old_jwt = jwt.decode(jwt_before.json()["access_token"], published, algorithms=["RS256"])
        assert old_jwt.claims["sub"] == "app"

        ann = _password_grant(http, "ann")
        assert ann.status_code == 200, ann.text
        wrong = http.post(
            "/auth/token",
            data={"grant_type": "password", "username": "ann@example.org", "password": "not-it"},
            auth=("app", APP_SECRET),
        )
        assert wrong.status_code == 400

        assert (
            _password_grant(http, "bob").json()["error_description"]
            == "Two-factor authentication code required"
        )
        assert _password_grant(http, "bob", totp=_code(bob_secret)).status_code == 200
        assert _password_grant(http, "bob", totp=recovery_codes[3]).status_code == 200
        assert _password_grant(http, "bob", totp=recovery_codes[3]).status_code == 400
        assert _password_grant(http, "cat", totp=_code(IMPORTED_TOTP_SECRET)).status_code == 200

        new_jwt = http.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("app", APP_SECRET)
        )
        assert new_jwt.status_code == 200
        assert (
            jwt.decode(new_jwt.json()["access_token"], published, algorithms=["RS256"]).header["kid"]
            == (old_jwt.header["kid"])
        )
        refreshed = http.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_before},
            auth=("app", APP_SECRET),
        )
        assert refreshed.status_code == 200, refreshed.text

        users = http.get("/User", params={"_sort": "id"}, auth=("reporting", REPORTING_SECRET))
        assert users.status_code == 200
        assert [entry["resource"]["id"] for entry in users.json()["entry"]] == ["ann", "bob", "cat"]
        assert users.json()["entry"][1]["resource"]["twoFactor"] == {"enabled": True}
        assert http.get("/Client", auth=("reporting", REPORTING_SECRET)).status_code == 403

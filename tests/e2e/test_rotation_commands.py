"""`fhirauth secrets rotate` and `fhirauth keys rotate` as an operator runs them, between real servers
sharing one SQLite file: the documented master-secret procedure, step by step, and a key rotation."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from support.server import ROOT_CLIENT_SECRET, LiveServerFactory, fhirauth_command, fhirauth_environment

from fhirauth.twofactor import totp

OLD = "the-old-master-secret-0001"
NEW = "the-new-master-secret-0002"
APP_SECRET = "rotation-app-secret"
PASSWORD = "rotation-user-password"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _env(*, secret: str, previous: list[str] | None = None) -> dict[str, str]:
    return {"FHIRAUTH_SECRET_KEY": secret, "FHIRAUTH_PREVIOUS_SECRET_KEYS": json.dumps(previous or [])}


def _fhirauth(storage: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fhirauth_command(*args),
        env=fhirauth_environment(storage, extra=env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sign_in(http: httpx2.Client, code: str) -> httpx2.Response:
    form = {"grant_type": "password", "username": "ann@example.org", "password": PASSWORD, "totp": code}
    return http.post("/auth/token", data=form, auth=("app", APP_SECRET))


def _audit_actions(http: httpx2.Client, action: str) -> list[dict[str, Any]]:
    bundle = http.get("/AuditEvent", params={"action": action}, auth=("root", ROOT_CLIENT_SECRET)).json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


def test_the_master_secret_procedure_keeps_every_sign_in_working(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    # 1. Running on the old master secret, with a 2FA user.
    first = live_server_factory(storage=storage, env=_env(secret=OLD))
    with httpx2.Client(base_url=first.url) as http:
        root = ("root", ROOT_CLIENT_SECRET)
        client = {"first_party": True, "secret": APP_SECRET, "grant_types": ["password"]}
        assert http.put("/Client/app", json=client, auth=root).status_code == 201
        user = {"email": "ann@example.org", "password": PASSWORD}
        assert http.put("/User/ann", json=user, auth=root).status_code == 201
        token = http.post(
            "/auth/token",
            data={"grant_type": "password", "username": "ann@example.org", "password": PASSWORD},
            auth=("app", APP_SECRET),
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        uri = http.post("/app/auth/two-factor/request", json={}, headers=bearer).json()["uri"]
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
        step = totp.step_at(time.time())
        confirm = {"token": totp.code_at(secret, step - 1)}
        recovery = http.post("/app/auth/two-factor/confirm", json=confirm, headers=bearer).json()[
            "recoveryCodes"
        ]
        login_page = http.get("/auth/login")
        csrf_cookie = login_page.cookies["fhirauth_csrf"]
        csrf_field = _CSRF.search(login_page.text).group(1)  # type: ignore[union-attr]
        jwks = http.get("/.well-known/jwks.json").json()
    first.stop()

    # 2. The deploy: the new master secret first, the old one still readable.
    both = _env(secret=NEW, previous=[OLD])
    second = live_server_factory(storage=storage, env=both)
    with httpx2.Client(base_url=second.url) as http:
        # A login form shown before the deploy still posts.
        posted = http.post(
            "/auth/login",
            data={"csrf": csrf_field, "username": "ann@example.org", "password": PASSWORD},
            headers={"Cookie": f"fhirauth_csrf={csrf_cookie}"},
            follow_redirects=False,
        )
        assert posted.status_code == 302

        # 3. The rotation, while this server serves.
        rotated = _fhirauth(storage, both, "secrets", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        kid = rotated.stdout.splitlines()[-1].rsplit(" ", 1)[1]
        assert rotated.stdout.splitlines() == [
            "User twoFactor.secretKey: 1 re-encrypted, 0 already current",
            "signing keys: 3 re-encrypted, 0 already current",  # RS256, ES256 and EdDSA
            "recovery-code pepper: 1 re-encrypted, 0 already current",
            f"every stored secret is sealed under master secret key id {kid}",
        ]
        assert _sign_in(http, recovery[0]).status_code == 200
        again = _fhirauth(storage, both, "secrets", "rotate")
        assert again.stdout.splitlines()[:3] == [
            "User twoFactor.secretKey: 0 re-encrypted, 1 already current",
            "signing keys: 0 re-encrypted, 3 already current",
            "recovery-code pepper: 0 re-encrypted, 1 already current",
        ]
        events = _audit_actions(http, "master-secret-rotated")
        assert [event["outcome"] for event in events] == ["success", "success"]
    second.stop()

    # 4. The old master secret is dropped.
    third = live_server_factory(storage=storage, env=_env(secret=NEW))
    with httpx2.Client(base_url=third.url) as http:
        assert _sign_in(http, totp.code_at(secret, totp.step_at(time.time()))).status_code == 200
        assert _sign_in(http, recovery[1]).status_code == 200
        assert _sign_in(http, recovery[0]).status_code == 400
        assert http.get("/.well-known/jwks.json").json() == jwks
    third.stop()

    # Without the old one a rotation started too early says so, and fails.
    early = _fhirauth(f"sqlite:///{tmp_path / 'early.db'}", _env(secret=OLD), "keys", "rotate")
    assert early.returncode == 0
    refused = _fhirauth(f"sqlite:///{tmp_path / 'early.db'}", _env(secret=NEW), "secrets", "rotate")
    assert refused.returncode == 1
    assert "is its master secret in FHIRAUTH_PREVIOUS_SECRET_KEYS?" in refused.stderr


def _rs256_kids(jwks: dict[str, Any]) -> list[str]:
    return [key["kid"] for key in jwks["keys"] if key["alg"] == "RS256"]


def _moments(line: str) -> list[datetime]:
    return [datetime.fromisoformat(m) for m in re.findall(r"\d{4}-\d\d-\d\dT[\d:.]+Z", line)]


def test_keys_rotate_publishes_a_new_key_and_schedules_the_old_ones_retirement(
    live_server_factory: LiveServerFactory, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'keys.db'}"
    env = _env(secret=OLD)
    first = live_server_factory(storage=storage, env=env)
    with httpx2.Client(base_url=first.url, auth=("root", ROOT_CLIENT_SECRET)) as http:
        jwt_client = {
            "grant_types": ["client_credentials"],
            "auth": {"client_credentials": {"token_format": "jwt", "access_token_expiration": 7200}},
        }
        assert http.put("/Client/long-lived", json=jwt_client).status_code == 201
        (old,) = _rs256_kids(http.get("/.well-known/jwks.json").json())
    first.stop()

    rotated = _fhirauth(storage, env, "keys", "rotate", "--alg", "RS256")
    assert rotated.returncode == 0, rotated.stderr
    announced, retiring = rotated.stdout.splitlines()
    new = announced.split()[3].rstrip(":")
    assert announced.startswith(
        f"new signing key {new}: RS256, in the JWKS of every server within 10 s, signs from "
    )
    assert retiring.startswith(f"key {old} signs until then and leaves the JWKS at ")
    (signs_from,), (retires,) = _moments(announced), _moments(retiring)
    # The longest JWT lifetime of any client plus a minute of verifier leeway.
    assert (retires - signs_from).total_seconds() == 7200 + 60

    custom = _fhirauth(storage, env, "keys", "rotate", "--retire-after", "30", "--alg", "RS256")
    assert custom.returncode == 0, custom.stderr
    newest = custom.stdout.split()[3].rstrip(":")
    (custom_from,), (custom_retires,) = (
        _moments(custom.stdout.splitlines()[0]),
        _moments(custom.stdout.splitlines()[1]),
    )
    assert custom.stdout.splitlines()[1].startswith(f"key {new} ")
    assert (custom_retires - custom_from).total_seconds() == 30
    assert _fhirauth(storage, env, "keys", "rotate", "--retire-after", "-1").returncode == 2
    assert _fhirauth(storage, env, "keys", "rotate", "--alg", "HS256").returncode == 2
    # Without --alg, every algorithm's set gets a new key.
    every = _fhirauth(storage, env, "keys", "rotate")
    assert every.returncode == 0, every.stderr
    announced_every = [line for line in every.stdout.splitlines() if line.startswith("new signing key ")]
    assert [line.split()[4].rstrip(",") for line in announced_every] == ["RS256", "ES256", "EdDSA"]
    latest = announced_every[0].split()[3].rstrip(":")

    second = live_server_factory(storage=storage, env=env)
    with httpx2.Client(base_url=second.url, auth=("root", ROOT_CLIENT_SECRET)) as http:
        assert _rs256_kids(http.get("/.well-known/jwks.json").json()) == [latest, newest, new, old]
        events = _audit_actions(http, "signing-key-rotated")
        assert sorted(
            detail["valueString"]
            for event in events
            for detail in event["entity"][0]["detail"]
            if detail["type"] == "kid"
        ) == sorted([new, newest, *(line.split()[3].rstrip(":") for line in announced_every)])

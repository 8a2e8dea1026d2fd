"""Deleting a User ends her Sessions: her tokens stay dead when a User with the same id comes back.

A restore from a backup is not a re-creation: it returns every Session to the backup's state, so the
access and refresh tokens that were live at the backup are live again (docs/operations.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from fhirauth.backup import export_bundle, restore_file
from fhirauth.storage.base import Filter, Query
from tests.api.conftest import NO_AUTH
from tests.api.pages_support import call, services
from tests.api.test_policy_access import put_policy, setup_users

FORM = {"grant_type": "password", "client_id": "spa", "password": "correct horse"}


def _tokens(api: TestClient, username: str = "ann@example.org") -> dict[str, str]:
    res = api.post("/auth/token", data={**FORM, "username": username}, headers=NO_AUTH)
    assert res.status_code == 200, res.text
    tokens: dict[str, str] = res.json()
    return tokens


def _reads_own_user(api: TestClient, tokens: dict[str, str], id: str = "ann") -> int:
    return api.get(f"/User/{id}", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code


def _refreshes(api: TestClient, tokens: dict[str, str]) -> int:
    form = {"grant_type": "refresh_token", "client_id": "spa", "refresh_token": tokens["refresh_token"]}
    return api.post("/auth/token", data=form, headers=NO_AUTH).status_code


def _sessions_of(api: TestClient, user_id: str) -> list[dict[str, Any]]:
    query = Query(filters=(Filter("user.id", (user_id,)),), count_total=False)
    page = call(api, services(api).storage.search, "Session", query)
    return page.items


SPA = {"resourceType": "Client", "grant_types": ["password"], "auth": {"password": {"refresh_token": True}}}


def _signed_in(api: TestClient) -> None:
    setup_users(api)
    assert api.put("/Client/spa", json=SPA).status_code == 200
    put_policy(
        api, "own-user", engine="matcho", matcho={"request-method": "get", "params": {"id": ".user.id"}}
    )


def test_deleting_a_user_ends_every_session_of_hers_and_no_one_elses(api: TestClient) -> None:
    _signed_in(api)
    first, second, bobs = _tokens(api), _tokens(api), _tokens(api, "bob@example.org")
    ann = call(api, services(api).resources.read, "User", "ann")
    call(api, lambda: services(api).sessions.create_browser_session(ann, max_age=3600, ip=None))
    # With the one setup_users signed in with.
    assert [session["active"] for session in _sessions_of(api, "ann")] == [True] * 4

    assert api.delete("/User/ann").status_code == 200
    assert [session["active"] for session in _sessions_of(api, "ann")] == [False] * 4
    again = {"resourceType": "User", "email": "ann@example.org", "password": "correct horse"}
    assert api.put("/User/ann", json=again).status_code == 201
    for tokens in (first, second):
        assert _reads_own_user(api, tokens) == 401
        assert _refreshes(api, tokens) == 400
    # The new Ann signs in afresh; Bob was never touched.
    assert _reads_own_user(api, _tokens(api)) == 200
    assert _reads_own_user(api, bobs, "bob") == 200


def test_a_restore_brings_back_the_tokens_live_at_the_backup(api: TestClient, tmp_path: Path) -> None:
    _signed_in(api)
    tokens = _tokens(api)
    backup = tmp_path / "backup.json"
    bundle = call(api, export_bundle, services(api).storage, services(api).clock)
    backup.write_text(json.dumps(bundle))
    assert api.delete("/User/ann").status_code == 200
    assert _reads_own_user(api, tokens) == 401

    app = services(api)
    call(api, lambda: restore_file(app.bundles, app.box, backup))
    assert _reads_own_user(api, tokens) == 200
    assert _refreshes(api, tokens) == 200

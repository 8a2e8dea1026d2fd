"""The root client (the administrator) under the limits on failed client authentication, on both
backends: a wrong root secret counts against the address it came from, on every route that takes
client credentials, never against the root's id (or anyone could lock the administrator out); an
address past its limit is refused before its secret is compared, right or wrong, so the answer tells
nothing; a right secret costs no storage work.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx2
import pytest
from starlette.testclient import TestClient

from fhirauth.app import create_app
from fhirauth.clock import ManualClock
from fhirauth.ratelimit import RATE_KIND, _record_key
from tests.api.conftest import NO_AUTH, ROOT, settings_for
from tests.api.pages_support import call, services
from tests.api.test_client_auth_limits import LIMITS, assert_json_429, assert_outcome_429

ATTACKER = "203.0.113.66"
ADMIN = "198.51.100.1"
NOT_AUTHENTICATED = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "login", "diagnostics": "Invalid client credentials"}],
}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Invalid client credentials"}


@pytest.fixture
def api(storage_url: str, clock: ManualClock) -> Iterator[TestClient]:
    settings = settings_for(storage_url, trust_proxy_headers=True, **LIMITS)
    app = create_app(settings, clock=clock)
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


def _basic(secret: str, address: str) -> dict[str, str]:
    token = base64.b64encode(f"root:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}", "X-Forwarded-For": address}


def _stored_count(api: TestClient, limit: str, key: str) -> int | None:
    record = call(api, services(api).storage.record_get, RATE_KIND, _record_key(limit, key))
    return None if record is None else int(record.document["count"])


def _introspect(api: TestClient, secret: str, address: str) -> httpx2.Response:
    return api.post("/auth/introspect", data={"token": "x"}, headers=_basic(secret, address))


def _revoke_in_body(api: TestClient, secret: str, address: str) -> httpx2.Response:
    form = {"token": "x", "client_id": "root", "client_secret": secret}
    return api.post("/auth/revoke", data=form, headers={**NO_AUTH, "X-Forwarded-For": address})


def test_wrong_root_secrets_count_against_the_address_on_every_route(
    api: TestClient, clock: ManualClock
) -> None:
    # The administrator's header is known to the server before the attack starts.
    assert api.get("/User", headers={"X-Forwarded-For": ADMIN}).status_code == 200
    assert _introspect(api, "guess-1", ATTACKER).json() == INVALID_CLIENT
    assert _revoke_in_body(api, "guess-2", ATTACKER).json() == INVALID_CLIENT
    assert api.get("/User", headers=_basic("guess-3", ATTACKER)).json() == NOT_AUTHENTICATED
    assert _stored_count(api, "client-auth-ip", ATTACKER) == 3
    # Never against the root's id: that would lock the administrator out everywhere.
    assert _stored_count(api, "client-auth-client", "root") is None
    assert_json_429(_introspect(api, "guess-4", ATTACKER))
    assert_json_429(_revoke_in_body(api, "guess-5", ATTACKER))
    # The right secret too, in its known header and anew: refused before any comparison.
    assert_outcome_429(api.get("/User", headers={"X-Forwarded-For": ATTACKER}))
    assert_json_429(_introspect(api, "secret", ATTACKER))
    assert_json_429(_revoke_in_body(api, "secret", ATTACKER))
    assert_json_429(
        api.post("/auth/token", data={"grant_type": "client_credentials"}, headers=_basic("secret", ATTACKER))
    )
    assert _stored_count(api, "client-auth-ip", ATTACKER) == 3
    # The administrator, elsewhere, is answered as ever, on every route.
    assert api.get("/User", headers={"X-Forwarded-For": ADMIN}).status_code == 200
    assert _introspect(api, "secret", ADMIN).json() == {"active": False}
    assert _revoke_in_body(api, "secret", ADMIN).status_code == 200
    clock.advance(60)
    assert api.get("/User", headers={"X-Forwarded-For": ATTACKER}).status_code == 200


def test_the_right_root_secret_costs_no_storage_work(api: TestClient) -> None:
    for _ in range(5):
        assert api.get("/User", headers={"X-Forwarded-For": ADMIN}).status_code == 200
        assert _introspect(api, "secret", ADMIN).status_code == 200
    assert _stored_count(api, "client-auth-ip", ADMIN) is None
    assert services(api).clients.failures_idle

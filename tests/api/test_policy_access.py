"""AccessPolicy over HTTP: Basic clients with linked and global policies, 401 vs 403, the demo's policy."""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.testclient import TestClient

from fhirauth.auth.principal import Principal
from fhirauth.errors import Forbidden, NotAuthenticated
from fhirauth.http.rest import policy_request
from fhirauth.services import Services
from tests.api.conftest import NO_AUTH

CHALLENGE = 'Basic realm="fhirauth", charset="UTF-8", Bearer realm="fhirauth"'


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


API = basic("api", "api-secret")
OTHER = basic("other", "other-secret")


def setup_clients(api: TestClient) -> None:
    for id in ("api", "other"):
        client = {"resourceType": "Client", "secret": f"{id}-secret", "grant_types": ["basic"]}
        assert api.put(f"/Client/{id}", json=client).status_code == 201


def put_policy(api: TestClient, id: str, **fields: Any) -> None:
    res = api.put(f"/AccessPolicy/{id}", json={"resourceType": "AccessPolicy", **fields})
    assert res.status_code in (200, 201), res.text


def test_allow_policy_linked_to_the_client_lets_it_in(api: TestClient) -> None:
    setup_clients(api)
    put_policy(api, "api-allow", engine="allow", link=[{"resourceType": "Client", "id": "api"}])
    assert api.get("/User", headers=API).status_code == 200
    created = api.post("/User", json={"resourceType": "User", "email": "ann@example.org"}, headers=API)
    assert created.status_code == 201
    assert api.get(f"/User/{created.json()['id']}", headers=API).json()["email"] == "ann@example.org"


def test_the_same_client_without_a_policy_is_403(api: TestClient) -> None:
    setup_clients(api)
    res = api.get("/User", headers=API)
    assert res.status_code == 403
    assert res.json()["issue"][0]["code"] == "forbidden"
    assert "www-authenticate" not in res.headers


def test_another_clients_linked_policy_does_not_help(api: TestClient) -> None:
    setup_clients(api)
    put_policy(api, "api-allow", engine="allow", link=[{"resourceType": "Client", "id": "api"}])
    assert api.get("/User", headers=OTHER).status_code == 403
    assert api.get("/User", headers=API).status_code == 200


def test_global_matcho_policy_allows_get_on_users_only(api: TestClient) -> None:
    setup_clients(api)
    put_policy(api, "read-users", engine="matcho", matcho={"request-method": "get", "uri": "#^/User.*"})
    assert api.get("/User", headers=API).status_code == 200
    assert api.get("/User", headers=OTHER).status_code == 200
    assert api.get("/User/nobody", headers=API).status_code == 404
    res = api.post("/User", json={"resourceType": "User", "email": "x@example.org"}, headers=API)
    assert res.status_code == 403
    assert api.get("/Client", headers=API).status_code == 403
    assert api.get("/User").json()["total"] == 0


def test_anonymous_is_401_with_a_challenge(api: TestClient) -> None:
    setup_clients(api)
    put_policy(api, "api-allow", engine="allow", link=[{"resourceType": "Client", "id": "api"}])
    res = api.get("/User", headers=NO_AUTH)
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == CHALLENGE
    assert res.json()["issue"][0]["code"] == "login"


def test_a_global_policy_applies_to_anonymous_callers_too(api: TestClient) -> None:
    # Aidbox semantics: an unlinked policy applies to every request, signed in or not.
    put_policy(api, "read-users", engine="matcho", matcho={"request-method": "get", "uri": "#^/User"})
    assert api.get("/User", headers=NO_AUTH).status_code == 200
    res = api.post("/User", json={"resourceType": "User"}, headers=NO_AUTH)
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == CHALLENGE


def test_policy_sees_the_body_and_params(api: TestClient) -> None:
    setup_clients(api)
    put_policy(
        api,
        "nurses-only",
        engine="matcho",
        matcho={"request-method": "post", "uri": "/User", "body": {"data": {"role": "nurse"}}},
        link=[{"resourceType": "Client", "id": "api"}],
    )
    put_policy(
        api,
        "search-by-email",
        engine="matcho",
        matcho={"request-method": "get", "params": {"email": "not-blank?", "type": "User"}},
        link=[{"resourceType": "Client", "id": "api"}],
    )
    nurse = {"resourceType": "User", "email": "n@example.org", "data": {"role": "nurse"}}
    assert api.post("/User", json=nurse, headers=API).status_code == 201
    doctor = {"resourceType": "User", "email": "d@example.org", "data": {"role": "doctor"}}
    assert api.post("/User", json=doctor, headers=API).status_code == 403
    found = api.get("/User", params={"email": "n@example.org"}, headers=API)
    assert found.status_code == 200
    assert found.json()["total"] == 1
    assert api.get("/User", headers=API).status_code == 403


def test_complex_policy_over_http(api: TestClient) -> None:
    setup_clients(api)
    put_policy(
        api,
        "read-users-or-sessions",
        engine="complex",
        link=[{"resourceType": "Client", "id": "api"}],
        **{
            "and": [
                {"engine": "matcho", "matcho": {"request-method": "get"}},
                {
                    "engine": "complex",
                    "or": [
                        {"engine": "matcho", "matcho": {"uri": "#^/User"}},
                        {
                            "engine": "json-schema",
                            "schema": {"properties": {"uri": {"pattern": "^/Session"}}},
                        },
                    ],
                },
            ]
        },
    )
    assert api.get("/User", headers=API).status_code == 200
    assert api.get("/Session", headers=API).status_code == 200
    assert api.get("/Client", headers=API).status_code == 403
    assert api.delete("/Session/s1", headers=API).status_code == 403


def test_a_broken_policy_denies_instead_of_failing(api: TestClient) -> None:
    setup_clients(api)
    put_policy(
        api, "broken", engine="matcho", matcho={"uri": "#(["}, link=[{"resourceType": "Client", "id": "api"}]
    )
    assert api.get("/User", headers=API).status_code == 403
    assert api.get("/User", headers=NO_AUTH).status_code == 401


def test_a_schema_with_an_invalid_regex_is_refused_on_write(api: TestClient) -> None:
    res = api.put(
        "/AccessPolicy/bad",
        json={
            "resourceType": "AccessPolicy",
            "engine": "json-schema",
            "schema": {"properties": {"uri": {"pattern": "(["}}},
        },
    )
    assert res.status_code == 422


def test_a_policy_change_applies_to_the_next_request(api: TestClient) -> None:
    setup_clients(api)
    assert api.get("/User", headers=API).status_code == 403
    put_policy(api, "api-allow", engine="allow", link=[{"resourceType": "Client", "id": "api"}])
    assert api.get("/User", headers=API).status_code == 200
    assert api.delete("/AccessPolicy/api-allow").status_code == 200
    assert api.get("/User", headers=API).status_code == 403


# The Aidbox demo's global policy for its JSON 2FA operations (aidbox-research §3.3), verbatim.
DEMO_TWO_FACTOR = {
    "engine": "json-schema",
    "schema": {
        "required": ["user"],
        "properties": {
            "uri": {
                "type": "string",
                "pattern": "^/app/auth/two-factor/request|/app/auth/two-factor/confirm$",
            }
        },
    },
}


def _request(method: str, path: str) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("203.0.113.5", 50000),
        "path_params": {},
    }
    return Request(scope)


async def _decision(services: Services, principal: Principal | None, method: str, path: str) -> int:
    try:
        await services.access.authorize(principal, policy_request(_request(method, path), principal, {}))
    except NotAuthenticated:
        return 401
    except Forbidden:
        return 403
    return 200


def test_the_demo_json_schema_policy_works_for_its_uris(api: TestClient) -> None:
    put_policy(api, "two-factor", **DEMO_TWO_FACTOR)
    user = api.put("/User/ann", json={"resourceType": "User", "email": "ann@example.org"}).json()
    web = {"resourceType": "Client", "id": "web", "grant_types": ["implicit"]}
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    ann = Principal("user", client=web, user=user)

    def decide(principal: Principal | None, method: str, path: str) -> int:
        return api.portal.call(_decision, services, principal, method, path)  # type: ignore[union-attr]

    assert decide(ann, "POST", "/app/auth/two-factor/request") == 200
    assert decide(ann, "POST", "/app/auth/two-factor/confirm") == 200
    assert decide(None, "POST", "/app/auth/two-factor/request") == 401
    assert decide(Principal("client", client=web), "POST", "/app/auth/two-factor/confirm") == 403
    assert decide(ann, "GET", "/User") == 403
    # Over HTTP the policy grants nothing on the resource API to a Basic client: it has no user.
    assert (
        api.put(
            "/Client/api", json={"resourceType": "Client", "secret": "api-secret", "grant_types": ["basic"]}
        ).status_code
        == 201
    )
    assert api.get("/User", headers=API).status_code == 403


# Bearer tokens of users (password grant through a public client)


def user_token(api: TestClient, username: str, password: str = "correct horse") -> str:
    res = api.post(
        "/auth/token",
        data={"grant_type": "password", "client_id": "spa", "username": username, "password": password},
        headers=NO_AUTH,
    )
    assert res.status_code == 200, res.text
    token: str = res.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def setup_users(api: TestClient) -> tuple[dict[str, str], dict[str, str]]:
    spa = {"resourceType": "Client", "grant_types": ["password"]}
    assert api.put("/Client/spa", json=spa).status_code == 201
    for id in ("ann", "bob"):
        user = {"resourceType": "User", "email": f"{id}@example.org", "password": "correct horse"}
        assert api.put(f"/User/{id}", json=user).status_code == 201
    return bearer(user_token(api, "ann@example.org")), bearer(user_token(api, "bob@example.org"))


def test_a_user_without_policies_is_403_on_the_api(api: TestClient) -> None:
    ann, _ = setup_users(api)
    res = api.get("/User/ann", headers=ann)
    assert res.status_code == 403
    assert api.get("/User/ann", headers={"Authorization": "Bearer not-a-token"}).status_code == 401


def test_a_policy_linked_to_a_user_helps_that_user_only(api: TestClient) -> None:
    ann, bob = setup_users(api)
    put_policy(api, "ann-all", engine="allow", link=[{"resourceType": "User", "id": "ann"}])
    assert api.get("/Client", headers=ann).status_code == 200
    assert api.get("/Client", headers=bob).status_code == 403


def test_a_policy_linked_to_the_client_applies_to_its_users(api: TestClient) -> None:
    ann, bob = setup_users(api)
    put_policy(api, "spa-users", engine="allow", link=[{"resourceType": "Client", "id": "spa"}])
    assert api.get("/User", headers=ann).status_code == 200
    assert api.get("/User", headers=bob).status_code == 200


def test_a_matcho_policy_can_give_users_their_own_record(api: TestClient) -> None:
    ann, bob = setup_users(api)
    put_policy(
        api,
        "own-user",
        engine="matcho",
        matcho={"request-method": "get", "uri": "#^/User/[^/]+$", "params": {"id": ".user.id"}},
    )
    assert api.get("/User/ann", headers=ann).json()["email"] == "ann@example.org"
    assert api.get("/User/bob", headers=ann).status_code == 403
    assert api.get("/User/bob", headers=bob).status_code == 200
    assert api.get("/User", headers=ann).status_code == 403
    assert api.get("/User/ann", headers=NO_AUTH).status_code == 401


def test_the_demo_policy_gives_a_user_nothing_on_the_resource_api(api: TestClient) -> None:
    ann, _ = setup_users(api)
    put_policy(api, "two-factor", **DEMO_TWO_FACTOR)
    assert api.get("/User", headers=ann).status_code == 403
    assert api.get("/User/ann", headers=ann).status_code == 403


def test_a_signed_in_user_needs_no_policy_for_own_endpoints(api: TestClient) -> None:
    ann, _ = setup_users(api)
    assert api.get("/auth/userinfo", headers=ann).json()["id"] == "ann"
    # The JSON 2FA operations also need the token's client to be first-party, and no policy.
    spa = {"resourceType": "Client", "first_party": True, "grant_types": ["password"]}
    assert api.put("/Client/spa", json=spa).status_code == 200
    assert "uri" in api.post("/app/auth/two-factor/request", json={}, headers=ann).json()
    assert api.delete("/Session", headers=ann).status_code == 204
    assert api.get("/auth/userinfo", headers=ann).status_code == 401

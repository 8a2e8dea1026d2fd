"""GET /openapi.json and /docs: a valid OpenAPI 3.1 document covering every JSON route, and real
responses that conform to it. The document does not depend on the backend, so SQLite only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from schemathesis.specs.openapi.definitions import OPENAPI_31
from starlette.routing import Route
from starlette.testclient import TestClient

from fhirauth.app import create_app, routes
from fhirauth.http import demo, pages, twofactor_pages, webauthn_pages
from fhirauth.http.openapi import endpoints
from fhirauth.http.openapi.document import build_document
from fhirauth.resources.schemas import SchemaRegistry
from tests.api.conftest import ROOT, settings_for

Document = dict[str, Any]

RESOURCE_TYPES = [
    "AccessPolicy",
    "AidboxConfig",
    "AuditEvent",
    "AuthConfig",
    "Client",
    "Grant",
    "Registration",
    "Session",
    "User",
    "WebAuthnCredential",
]
PER_TYPE = ["search", "create", "read", "update", "patch", "delete", "history", "vread"]
FIXED = {
    ("post", "/"): "bundle",
    ("get", "/health"): "health",
    ("post", "/auth/token"): "token",
    ("post", "/auth/introspect"): "introspect",
    ("post", "/auth/revoke"): "revoke",
    ("get", "/auth/userinfo"): "userinfoGet",
    ("post", "/auth/userinfo"): "userinfoPost",
    ("delete", "/Session"): "endSession",
    ("get", "/.well-known/openid-configuration"): "openidConfiguration",
    ("get", "/.well-known/oauth-authorization-server"): "authorizationServerMetadata",
    ("get", "/.well-known/jwks.json"): "jwks",
    ("get", "/.well-known/smart-configuration"): "smartConfiguration",
    ("get", "/metadata"): "capabilityStatement",
    ("post", "/auth/smart/launch"): "registerLaunch",
    ("post", "/app/auth/two-factor/request"): "twoFactorRequest",
    ("post", "/app/auth/two-factor/confirm"): "twoFactorConfirm",
    ("post", "/app/auth/two-factor/disable"): "twoFactorDisable",
    ("post", "/app/auth/two-factor/verify"): "twoFactorVerify",
    ("post", "/app/auth/two-factor/recovery-codes"): "twoFactorRecoveryCodes",
    ("get", "/app/auth/two-factor/passkeys"): "passkeyList",
    ("post", "/app/auth/two-factor/passkeys/registration/options"): "passkeyRegistrationOptions",
    ("post", "/app/auth/two-factor/passkeys/registration"): "passkeyRegister",
    ("post", "/app/auth/two-factor/passkeys/authentication/options"): "passkeyAuthenticationOptions",
    ("post", "/app/auth/two-factor/passkeys/authentication"): "passkeyAuthenticate",
    ("post", "/app/auth/two-factor/passkeys/remove"): "passkeyRemove",
    ("get", "/app/auth/two-factor/trusted-devices"): "trustedDeviceList",
    ("delete", "/app/auth/two-factor/trusted-devices"): "trustedDeviceForgetAll",
    ("delete", "/app/auth/two-factor/trusted-devices/{id}"): "trustedDeviceForget",
}
# Browser faces: HTML forms with CSRF fields, not an API.
UNDOCUMENTED_MODULES = {
    pages.__name__,
    twofactor_pages.__name__,
    webauthn_pages.__name__,
    demo.__name__,
    endpoints.__name__,
}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(settings_for("sqlite://:memory:"))
    with TestClient(app, raise_server_exceptions=False, headers={"Authorization": ROOT}) as client:
        yield client


@pytest.fixture(scope="module")
def document(client: TestClient) -> Document:
    response = client.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: Document = response.json()
    return body


def conforms(document: Document, schema_name: str, value: object) -> list[str]:
    """Every violation of `value` against a component schema, references resolved in the document."""
    registry: Registry[Any] = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(document))
    validator = Draft202012Validator(
        {"$ref": f"urn:openapi#/components/schemas/{schema_name}"}, registry=registry
    )
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(value)]


def refs_in(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def test_the_document_is_valid_openapi_3_1(document: Document) -> None:
    errors = [error.message for error in Draft202012Validator(OPENAPI_31).iter_errors(document)]
    assert errors == []
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "http://testserver"}]
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_reference_resolves_inside_the_document(document: Document) -> None:
    unresolved = []
    for ref in set(refs_in(document)):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) and ref.startswith("#/") else None
        if node is None:
            unresolved.append(ref)
    assert unresolved == []
    # Nothing an OpenAPI tool would have to fetch or resolve against the wrong base.
    text = repr(document["components"])
    assert "$defs" not in text
    assert "$schema" not in text
    assert "json-schema.org" not in text


def test_every_json_route_is_documented_and_only_browser_pages_are_not(document: Document) -> None:
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    expected = set(FIXED)
    for resource_type in RESOURCE_TYPES:
        expected |= {
            ("get", f"/{resource_type}"),
            ("post", f"/{resource_type}"),
            ("get", f"/{resource_type}/{{id}}"),
            ("put", f"/{resource_type}/{{id}}"),
            ("patch", f"/{resource_type}/{{id}}"),
            ("delete", f"/{resource_type}/{{id}}"),
            ("get", f"/{resource_type}/{{id}}/_history"),
            ("get", f"/{resource_type}/{{id}}/_history/{{vid}}"),
        }
    assert documented == expected
    # A route added later is documented, or it is a browser page (the demo's too, mounted on demand).
    left_out = set()
    for route in [*routes(), *demo.routes]:
        if not isinstance(route, Route) or route.methods is None:
            continue
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
        concrete = [path.replace("{type}", t) for t in RESOURCE_TYPES] if "{type}" in path else [path]
        for method in route.methods - {"HEAD"}:
            if any(method.lower() not in document["paths"].get(p, {}) for p in concrete):
                left_out.add(route.endpoint.__module__)
    assert left_out == UNDOCUMENTED_MODULES


def test_operation_ids_name_each_operation_once(document: Document) -> None:
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) == len(RESOURCE_TYPES) * len(PER_TYPE) + len(FIXED)
    for (method, path), operation_id in FIXED.items():
        assert document["paths"][path][method]["operationId"] == operation_id
    assert {f"{kind}User" for kind in PER_TYPE} <= set(ids)


def test_search_documents_its_paging_and_selection_parameters(document: Document) -> None:
    search = document["paths"]["/User"]["get"]
    parameters = {p["name"]: p for p in search["parameters"]}
    assert list(parameters) == ["_count", "_page", "_sort", "_elements", "_id", "_format"]
    assert parameters["_count"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 1000}
    assert parameters["_page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100000}
    assert set(search["responses"]) == {"200", "400", "401", "403", "429", "503"}
    assert search["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/User.searchset"
    }


def test_writes_take_json_and_yaml_and_list_their_real_statuses(document: Document) -> None:
    create = document["paths"]["/User"]["post"]
    assert list(create["requestBody"]["content"]) == [
        "application/json",
        "application/fhir+json",
        "text/yaml",
    ]
    assert create["requestBody"]["content"]["text/yaml"]["schema"] == {"$ref": "#/components/schemas/User"}
    assert list(create["responses"]) == [
        "200",
        "201",
        "400",
        "401",
        "403",
        "409",
        "412",
        "413",
        "415",
        "422",
        "429",
        "503",
    ]
    assert set(create["responses"]["201"]["headers"]) == {"ETag", "Last-Modified", "Location"}
    assert create["responses"]["422"] == {"$ref": "#/components/responses/Outcome422"}
    patch = document["paths"]["/User/{id}"]["patch"]
    assert list(patch["requestBody"]["content"]) == [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/json",
        "text/yaml",
    ]
    assert list(patch["responses"]) == [
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "410",
        "412",
        "413",
        "415",
        "422",
        "429",
        "503",
    ]
    read = document["paths"]["/User/{id}"]["get"]
    assert list(read["responses"]) == ["200", "401", "403", "404", "410", "429", "503"]
    delete = document["paths"]["/User/{id}"]["delete"]
    assert list(delete["responses"]) == ["200", "204", "400", "401", "403", "409", "412", "429", "503"]
    outcome = document["components"]["responses"]["Outcome503"]
    assert outcome["content"]["text/yaml"]["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}
    assert set(outcome["headers"]) == {"Retry-After"}


def test_oauth_and_two_factor_errors_have_their_own_shapes(document: Document) -> None:
    token = document["paths"]["/auth/token"]["post"]
    assert list(token["requestBody"]["content"]) == ["application/x-www-form-urlencoded", "application/json"]
    assert list(token["responses"]) == ["200", "400", "401", "429", "503"]
    assert token["responses"]["400"] == {"$ref": "#/components/responses/OAuth400"}
    oauth_429 = document["components"]["responses"]["OAuth429"]
    assert set(oauth_429["headers"]) == {"Cache-Control", "Retry-After"}
    assert token["security"] == [{"basicAuth": []}, {}]
    oauth_401 = document["components"]["responses"]["OAuth401"]
    assert oauth_401["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OAuthError"}
    confirm = document["paths"]["/app/auth/two-factor/confirm"]["post"]
    assert confirm["security"] == [{"bearerAuth": []}]
    assert confirm["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TwoFactorError"
    }
    assert set(confirm["responses"]["429"]["headers"]) == {"Retry-After"}
    schemes = document["components"]["securitySchemes"]
    assert schemes["basicAuth"]["scheme"] == "basic"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert document["paths"]["/health"]["get"]["security"] == []


def test_rate_limits_and_a_busy_server_are_documented_where_they_answer(document: Document) -> None:
    """Failed client authentication is limited on every Basic-authenticated route (429), and an OAuth
    endpoint's 503 is either storage's OperationOutcome or RFC 6749's temporarily_unavailable."""
    paths = document["paths"]
    for path in ("/auth/token", "/auth/introspect", "/auth/revoke"):
        responses = paths[path]["post"]["responses"]
        assert responses["429"] == {"$ref": "#/components/responses/OAuth429"}, path
        assert responses["503"] == {"$ref": "#/components/responses/OAuth503"}, path
    oauth_503 = document["components"]["responses"]["OAuth503"]
    assert set(oauth_503["headers"]) == {"Cache-Control", "Retry-After"}
    assert oauth_503["content"]["application/json"]["schema"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/OperationOutcome"},
            {"$ref": "#/components/schemas/OAuthError"},
        ]
    }
    assert paths["/User/{id}"]["get"]["responses"]["429"] == {"$ref": "#/components/responses/Outcome429"}
    assert paths["/User"]["post"]["responses"]["429"] == {"$ref": "#/components/responses/Outcome429"}


def test_resource_schemas_come_from_schemas_dir_adapted_for_openapi(document: Document) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["User.id"] == {"type": "string", "pattern": "^[A-Za-z0-9\\-\\.]{1,64}$"}
    assert schemas["User"]["properties"]["id"] == {"$ref": "#/components/schemas/User.id"}
    assert schemas["User"]["properties"]["password"] == {"type": "string", "minLength": 1, "writeOnly": True}
    assert schemas["Client"]["properties"]["secret"]["writeOnly"] is True
    assert schemas["User"]["properties"]["twoFactor"]["properties"]["secretKey"]["writeOnly"] is True
    # An AccessPolicy's `schema` is any JSON Schema: described without the remote meta-schema.
    assert schemas["AccessPolicy.schema"] == {
        "description": (
            "Evaluated against the request object; must itself be a valid JSON Schema (draft 2020-12). "
            "Keywords starting with $ may be used; a $ref resolves only within the schema itself and is "
            "never fetched."
        ),
        "type": ["object", "boolean"],
        "x-dollar-keys": True,
    }
    assert schemas["AccessPolicy.policy"]["properties"]["and"]["items"] == {
        "$ref": "#/components/schemas/AccessPolicy.policy"
    }


def test_a_schema_with_a_remote_reference_is_refused_at_build_time(tmp_path: Path) -> None:
    (tmp_path / "Thing.json").write_text(
        '{"type": "object", "properties": {"resourceType": {"const": "Thing"},'
        ' "x": {"$ref": "https://example.com/x.json"}}}'
    )
    with pytest.raises(
        ValueError, match=re.escape("Thing: cannot describe the $ref 'https://example.com/x.json'")
    ):
        build_document(routes(), SchemaRegistry.from_directory(tmp_path), "http://x")


def test_the_document_is_built_once(client: TestClient) -> None:
    first = client.get("/openapi.json")
    app_state = client.app.state  # type: ignore[attr-defined]
    built = app_state.openapi
    second = client.get("/openapi.json")
    assert first.content == second.content
    assert app_state.openapi is built


def test_real_responses_conform_to_the_document(client: TestClient, document: Document) -> None:
    created = client.post(
        "/User", json={"resourceType": "User", "email": "c@example.org", "password": "pw-123456"}
    )
    assert created.status_code == 201
    assert conforms(document, "User", created.json()) == []
    assert "password" not in created.json()
    user_id = created.json()["id"]
    searched = client.get("/User", params={"_count": "1", "_elements": "email"})
    assert conforms(document, "User.searchset", searched.json()) == []
    history = client.get(f"/User/{user_id}/_history")
    assert conforms(document, "User.history", history.json()) == []
    missing = client.get("/User/nobody")
    assert missing.status_code == 404
    assert conforms(document, "OperationOutcome", missing.json()) == []
    bundle = client.post(
        "/",
        json={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": "/User/nobody"}}],
        },
    )
    assert conforms(document, "BundleResponse", bundle.json()) == []
    refused = client.post("/auth/token", data={"grant_type": "password"}, headers={"Authorization": ""})
    assert refused.status_code == 401
    assert conforms(document, "OAuthError", refused.json()) == []
    metadata = client.get("/.well-known/oauth-authorization-server")
    assert conforms(document, "ServerMetadata", metadata.json()) == []
    assert conforms(document, "JWKS", client.get("/.well-known/jwks.json").json()) == []
    # and a document that breaks the schema is caught: the check can fail
    assert conforms(document, "User", {"resourceType": "User", "id": "bad id"}) != []


def test_the_docs_page_lists_every_operation_without_scripts(client: TestClient, document: Document) -> None:
    response = client.get("/docs", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    page = response.text
    assert "<script" not in page
    assert re.findall(r'href="(?:https?:)?//', page) == []
    for item in document["paths"].values():
        for operation in item.values():
            assert f'id="{operation["operationId"]}"' in page
    assert "<code>_count</code>" in page
    assert "<code>integer 0…1000</code>" in page
    assert "<code>/User/{id}/_history/{vid}</code>" in page
    assert "<p>Read a User</p>" in page
    assert "<p>Read an AccessPolicy</p>" in page
    assert "`" not in page
    assert "<code>MergePatch | JsonPatch</code>" in page
    assert client.get("/static/api-docs.css").status_code == 200

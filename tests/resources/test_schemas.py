from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import extend

from fhirauth.errors import Invalid
from fhirauth.resources.schemas import (
    _FORMATS,
    SchemaRegistry,
    _additional_properties,
    _inline_local_refs,
    _pattern,
    _required,
    _Validator,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
REGISTRY = SchemaRegistry.from_directory(SCHEMAS)

GRANT_TYPES = (
    "['basic', 'authorization_code', 'code', 'implicit', 'password', 'client_credentials', "
    "'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange']"
)
WEBHOOK_AUTH = "Basic dHdvLWZhY3Rvci13ZWJob29rOnR3by1mYWN0b3Itd2ViaG9vaw=="


def issues_of(resource: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(Invalid) as caught:
        REGISTRY.validate(resource)
    assert all(issue.code == "invalid" and len(issue.expression) == 1 for issue in caught.value.issues)
    return [(issue.expression[0], issue.diagnostics) for issue in caught.value.issues]


def test_every_resource_type_has_a_schema() -> None:
    assert REGISTRY.types == frozenset(
        {
            "AuthConfig",
            "Client",
            "User",
            "AidboxConfig",
            "AccessPolicy",
            "Session",
            "Registration",
            "AuditEvent",
            "Grant",
            "WebAuthnCredential",
        }
    )


@pytest.mark.parametrize("resource_type", sorted(REGISTRY.types))
def test_every_schema_pins_resource_type_id_and_meta(resource_type: str) -> None:
    schema = REGISTRY.schema(resource_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["resourceType"] == {"const": resource_type}
    assert schema["properties"]["id"] == {"$ref": "#/$defs/id"}
    assert schema["$defs"]["id"] == {"type": "string", "pattern": "^[A-Za-z0-9\\-\\.]{1,64}$"}
    assert schema["properties"]["meta"] == {"$ref": "#/$defs/meta"}
    assert schema["$defs"]["meta"]["type"] == "object"


ACCEPTED = {
    # The Aidbox 2FA demo (aidbox-research §5, §6).
    "AuthConfig/app (demo)": {
        "resourceType": "AuthConfig",
        "id": "app",
        "twoFactor": {
            "issuerName": "Demo",
            "validPastTokensCount": 5,
            "webhook": {
                "endpoint": "http://devbox:8080/webhook/two-factor-confirmation",
                "headers": {"Authorization": WEBHOOK_AUTH},
            },
        },
    },
    "AuthConfig/myconfig (Aidbox docs)": {
        "resourceType": "AuthConfig",
        "id": "myconfig",
        "twoFactor": {
            "issuerName": "my-app",
            "validPastTokensCount": 3,
            "webhook": {"endpoint": "https://my-app.com", "timeout": 500},
        },
    },
    "AuthConfig with every fhirauth setting": {
        "resourceType": "AuthConfig",
        "id": "full",
        "asidCookieMaxAge": 432000,
        "theme": {
            "title": "Sign in",
            "brand": "Acme",
            "styleUrl": "https://cdn.example.com/login.css",
            "forgotPasswordUrl": "https://example.com/forgot?from=login%20page",
        },
        "twoFactor": {
            "issuerName": "Acme Health",
            "validPastTokensCount": 0,
            "validFutureTokensCount": 10,
            "maxAttempts": 100,
            "lockoutSeconds": 1,
            "recoveryCodes": False,
            "webhook": {"endpoint": "https://hooks.example.com/otp", "timeout": 60000, "headers": {}},
        },
        "somethingAidboxHas": {"kept": True},
    },
    "Client/web (demo)": {
        "resourceType": "Client",
        "id": "web",
        "first_party": True,
        "grant_types": ["implicit"],
        "auth": {"implicit": {"redirect_uri": "http://localhost:3000/auth"}},
    },
    "Client/two-factor-webhook (demo)": {
        "resourceType": "Client",
        "id": "two-factor-webhook",
        "secret": "two-factor-webhook",
        "grant_types": ["basic"],
    },
    "Client with every flow setting": {
        "resourceType": "Client",
        "id": "spa.v2",
        "secret": "s3cret",
        "active": True,
        "allowed_origins": ["http://localhost:3000"],
        "grant_types": ["code", "authorization_code", "refresh_token", "password", "client_credentials"],
        "auth": {
            "authorization_code": {
                "redirect_uri": ["http://localhost:3000/cb", "com.example.app:/callback"],
                "access_token_expiration": 3600,
                "refresh_token": True,
                "refresh_token_expiration": 86400,
                "token_format": "jwt",
                "secret_required": False,
                "pkce": True,
                "audience": ["https://api.example.com"],
            },
            "password": {"secret_required": True, "refresh_token": False},
            "client_credentials": {"access_token_expiration": 60, "audience": "https://api.example.com"},
        },
        "smart": {"launch_uri": "https://app.example.com/launch"},
    },
    "AidboxConfig/provider (demo)": {
        "resourceType": "AidboxConfig",
        "id": "provider",
        "provider": {"default": "console", "console": {"type": "console"}},
    },
    "AidboxConfig with smtp (Aidbox docs)": {
        "resourceType": "AidboxConfig",
        "id": "provider",
        "provider": {
            "default": "smtp-provider",
            "smtp-provider": {
                "type": "smtp",
                "host": "smtp.example.com",
                "port": 465,
                "tls": True,
                "from": "user@example.com",
                "username": "user@example.com",
                "password": "password",
            },
        },
        "auth": {"keys": {"secret": "x", "public": "y"}},
    },
    "User with twoFactor": {
        "resourceType": "User",
        "id": "alice",
        "meta": {
            "versionId": "3",
            "lastUpdated": "2025-01-01T00:00:00Z",
            "createdAt": "2025-01-01T00:00:00Z",
        },
        "email": "alice@example.com",
        "userName": "alice",
        "password": "correct horse battery staple",
        "name": {"givenName": "Alice", "familyName": "Smith"},
        "roles": [{"value": "admin"}],
        "data": {"plan": "pro"},
        "twoFactor": {"enabled": True, "secretKey": "JBSWY3DPEHPK3PXP", "transport": "sms"},
    },
    "User as the server writes it back (hash, sealed secret, recovery digests)": {
        "resourceType": "User",
        "id": "alice",
        "password": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        "twoFactor": {"enabled": True, "secretKey": "sb1:k1:bm9uY2VzZWFsZWQ", "recoveryCodes": ["d1", "d2"]},
    },
    "User with extra SCIM-like fields": {
        "resourceType": "User",
        "emails": [{"value": "a@example.com", "primary": True}],
        "x-department": "cardiology",
        "twoFactor": {"enabled": False},
    },
    "AccessPolicy allow linked to a client": {
        "resourceType": "AccessPolicy",
        "id": "api-client",
        "engine": "allow",
        "link": [{"resourceType": "Client", "id": "basic"}],
    },
    "AccessPolicy json-schema (demo)": {
        "resourceType": "AccessPolicy",
        "id": "authenticated-user",
        "description": "Signed-in users",
        "engine": "json-schema",
        "schema": {"type": "object", "required": ["user"], "properties": {"uri": {"pattern": "^/User$"}}},
    },
    "AccessPolicy complex": {
        "resourceType": "AccessPolicy",
        "engine": "complex",
        "or": [
            {"engine": "matcho", "matcho": {"uri": "#/Encounter.*", "request-method": {"$enum": ["get"]}}},
            {"engine": "complex", "and": [{"engine": "allow"}]},
        ],
    },
    "Session": {
        "resourceType": "Session",
        "id": "s-1",
        "access_token": "3f1a...hash",
        "active": True,
        "type": "authorization_code",
        "client": {"resourceType": "Client", "id": "web"},
        "user": {"resourceType": "User", "id": "alice"},
        "parent": {"resourceType": "Session", "id": "s-0"},
        "scope": ["openid", "profile"],
        "exp": 1767225600,
        "refresh_token_exp": 1767312000,
        "start": "2025-12-31T00:00:00Z",
        "iss": "http://localhost:8080",
        "jti": "abc",
        "audience": "https://api.example.com",
        "code_challenge": "kept: the server decides what else a session holds",
    },
    "Registration": {
        "resourceType": "Registration",
        "status": "active",
        "email": "bob@example.com",
        "params": {"redirect_to": "/"},
        "resource": {"resourceType": "User", "email": "bob@example.com"},
    },
    "Grant": {
        "resourceType": "Grant",
        "client": {"resourceType": "Client", "id": "third-party"},
        "user": {"resourceType": "User", "id": "alice"},
        "scope": "openid profile",
        "start": "2025-12-31T00:00:00Z",
    },
    "AuditEvent": {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110114",
            "display": "User Authentication",
        },
        "subtype": [{"code": "two-factor-lockout", "display": "2FA locked"}],
        "action": "E",
        "recorded": "2025-12-31T00:00:00Z",
        "outcome": "4",
        "agent": [
            {
                "who": {"resourceType": "User", "id": "alice"},
                "requestor": True,
                "network": {"address": "127.0.0.1", "type": "2"},
            },
            {"who": {"resourceType": "Client", "id": "web"}, "requestor": False},
        ],
        "source": {"site": "fhirauth", "observer": {"display": "fhirauth"}},
        "entity": [
            {
                "what": {"resourceType": "User", "id": "alice"},
                "detail": [{"type": "attempts", "valueString": "5"}],
            }
        ],
    },
}


@pytest.mark.parametrize("resource", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepts(resource: dict[str, Any]) -> None:
    assert REGISTRY.validate(resource) is None


REJECTED = {
    "twoFactor.enabled not a boolean": (
        {"resourceType": "User", "twoFactor": {"enabled": "yes", "secretKey": "JBSWY3DPEHPK3PXP"}},
        [("User.twoFactor.enabled", "expected boolean")],
    ),
    "twoFactor.enabled missing": (
        {"resourceType": "User", "twoFactor": {"transport": "sms"}},
        [("User.twoFactor.enabled", "required property 'enabled' is missing")],
    ),
    "twoFactor.secretKey empty, transport a number": (
        {"resourceType": "User", "twoFactor": {"enabled": True, "secretKey": "", "transport": 1}},
        [
            ("User.twoFactor.secretKey", "expected a non-empty string"),
            ("User.twoFactor.transport", "expected string"),
        ],
    ),
    "password empty, email a number": (
        {"resourceType": "User", "password": "", "email": 42},
        [("User.email", "expected string"), ("User.password", "expected a non-empty string")],
    ),
    "id with a trailing newline": (
        {"resourceType": "User", "id": "alice\n"},
        [("User.id", "'alice\\n' does not match the pattern ^[A-Za-z0-9\\-\\.]{1,64}$")],
    ),
    "id with a slash, meta not an object": (
        {"resourceType": "User", "id": "a/b", "meta": []},
        [
            ("User.id", "'a/b' does not match the pattern ^[A-Za-z0-9\\-\\.]{1,64}$"),
            ("User.meta", "expected object"),
        ],
    ),
    "id of 65 characters": (
        {"resourceType": "Client", "id": "a" * 65},
        [("Client.id", f"{'a' * 65!r} does not match the pattern ^[A-Za-z0-9\\-\\.]{{1,64}}$")],
    ),
    "unknown grant type": (
        {"resourceType": "Client", "grant_types": ["basic", "magic"]},
        [("Client.grant_types[1]", f"'magic' is not one of {GRANT_TYPES}")],
    ),
    "redirect_uri of the wrong types": (
        {
            "resourceType": "Client",
            "auth": {"implicit": {"redirect_uri": 5}, "password": {"redirect_uri": ["ok", 5]}},
        },
        [
            ("Client.auth.implicit.redirect_uri", "expected string or array"),
            ("Client.auth.password.redirect_uri[1]", "expected string"),
        ],
    ),
    "flow settings of the wrong types": (
        {
            "resourceType": "Client",
            "secret": "",
            "first_party": "true",
            "auth": {
                "authorization_code": {
                    "token_format": "opaque",
                    "access_token_expiration": 0,
                    "refresh_token": "yes",
                    "pkce": 1,
                }
            },
        },
        [
            ("Client.auth.authorization_code.access_token_expiration", "expected a number >= 1"),
            ("Client.auth.authorization_code.pkce", "expected boolean"),
            ("Client.auth.authorization_code.refresh_token", "expected boolean"),
            ("Client.auth.authorization_code.token_format", "'opaque' is not one of ['jwt']"),
            ("Client.first_party", "expected boolean"),
            ("Client.secret", "expected a non-empty string"),
        ],
    ),
    "validPastTokensCount out of range, a string, a boolean": (
        {
            "resourceType": "AuthConfig",
            "twoFactor": {
                "validPastTokensCount": 11,
                "validFutureTokensCount": "1",
                "maxAttempts": True,
                "lockoutSeconds": 0,
            },
        },
        [
            ("AuthConfig.twoFactor.lockoutSeconds", "expected a number >= 1"),
            ("AuthConfig.twoFactor.maxAttempts", "expected integer"),
            ("AuthConfig.twoFactor.validFutureTokensCount", "expected integer"),
            ("AuthConfig.twoFactor.validPastTokensCount", "expected a number <= 10"),
        ],
    ),
    "webhook without endpoint": (
        {"resourceType": "AuthConfig", "twoFactor": {"webhook": {"timeout": 500}}},
        [("AuthConfig.twoFactor.webhook.endpoint", "required property 'endpoint' is missing")],
    ),
    "webhook endpoint not a URL": (
        {"resourceType": "AuthConfig", "twoFactor": {"webhook": {"endpoint": "not a url"}}},
        [
            (
                "AuthConfig.twoFactor.webhook.endpoint",
                "'not a url' does not match the pattern ^[Hh][Tt][Tt][Pp][Ss]?://",
            ),
            ("AuthConfig.twoFactor.webhook.endpoint", "'not a url' is not a valid uri"),
        ],
    ),
    "webhook endpoint not http": (
        {"resourceType": "AuthConfig", "twoFactor": {"webhook": {"endpoint": "file:///etc/passwd"}}},
        [
            (
                "AuthConfig.twoFactor.webhook.endpoint",
                "'file:///etc/passwd' does not match the pattern ^[Hh][Tt][Tt][Pp][Ss]?://",
            )
        ],
    ),
    "webhook timeout and headers": (
        {
            "resourceType": "AuthConfig",
            "twoFactor": {
                "webhook": {"endpoint": "https://x.example", "timeout": 60001, "headers": {"X-Try": 1}}
            },
        },
        [
            ("AuthConfig.twoFactor.webhook.headers.X-Try", "expected string"),
            ("AuthConfig.twoFactor.webhook.timeout", "expected a number <= 60000"),
        ],
    ),
    "misspelt two-factor setting": (
        {
            "resourceType": "AuthConfig",
            "twoFactor": {"maxAttempt": 3, "webhook": {"endpoint": "https://x", "secret": "s"}},
        },
        [
            ("AuthConfig.twoFactor.maxAttempt", "unknown property 'maxAttempt'"),
            ("AuthConfig.twoFactor.webhook.secret", "unknown property 'secret'"),
        ],
    ),
    "issuerName with a colon, theme URL with a space": (
        {
            "resourceType": "AuthConfig",
            "twoFactor": {"issuerName": "Acme:Prod"},
            "theme": {"styleUrl": "https://x/a b.css"},
        },
        [
            ("AuthConfig.theme.styleUrl", "'https://x/a b.css' is not a valid uri"),
            ("AuthConfig.twoFactor.issuerName", "'Acme:Prod' does not match the pattern ^[^:]+$"),
        ],
    ),
    "provider of an unknown type, with a typo": (
        {
            "resourceType": "AidboxConfig",
            "provider": {
                "default": "mg",
                "mg": {"type": "mailgun"},
                "smtp": {"type": "smtp", "port": "465", "passwrod": "x"},
            },
        },
        [
            ("AidboxConfig.provider.mg.type", "'mailgun' is not one of ['console', 'smtp']"),
            ("AidboxConfig.provider.smtp.passwrod", "unknown property 'passwrod'"),
            ("AidboxConfig.provider.smtp.port", "expected integer"),
        ],
    ),
    "policy that fhirauth cannot evaluate": (
        {
            "resourceType": "AccessPolicy",
            "engine": "sql",
            "roleName": "admin",
            "link": [{"resourceType": "Operation", "id": "x"}],
        },
        [
            ("AccessPolicy.engine", "'sql' is not one of ['allow', 'json-schema', 'matcho', 'complex']"),
            ("AccessPolicy.link[0].resourceType", "'Operation' is not one of ['Client', 'User']"),
            ("AccessPolicy.roleName", "unknown property 'roleName'"),
        ],
    ),
    "policy without engine, sub-policy with an unknown property": (
        {"resourceType": "AccessPolicy", "or": [{"engine": "allow"}, {"engine": "allow", "sql": "select"}]},
        [
            ("AccessPolicy.engine", "required property 'engine' is missing"),
            ("AccessPolicy.or[1].sql", "unknown property 'sql'"),
        ],
    ),
    "policy schema that is not a JSON Schema": (
        {
            "resourceType": "AccessPolicy",
            "engine": "json-schema",
            "schema": {"type": "objekt", "pattern": "("},
        },
        [
            ("AccessPolicy.schema.pattern", "'(' is not a valid regex"),
            ("AccessPolicy.schema.type", "'objekt' is not valid under any of the given schemas"),
        ],
    ),
    "session references of the wrong type": (
        {
            "resourceType": "Session",
            "client": {"resourceType": "User", "id": "x"},
            "user": {"id": "y"},
            "exp": 1.5,
        },
        [
            ("Session.client.resourceType", "expected 'Client'"),
            ("Session.exp", "expected integer"),
            ("Session.user.resourceType", "required property 'resourceType' is missing"),
        ],
    ),
    "registration status": (
        {"resourceType": "Registration", "status": "pending"},
        [("Registration.status", "'pending' is not one of ['active', 'activated']")],
    ),
    "grant without client and user": (
        {"resourceType": "Grant", "scope": 7},
        [
            ("Grant.client", "required property 'client' is missing"),
            ("Grant.scope", "expected string or array"),
            ("Grant.user", "required property 'user' is missing"),
        ],
    ),
    "audit agent who not an object": (
        {"resourceType": "AuditEvent", "agent": [{"who": "User/alice"}], "recorded": 1},
        [("AuditEvent.agent[0].who", "expected object"), ("AuditEvent.recorded", "expected string")],
    ),
}


@pytest.mark.parametrize(("resource", "expected"), REJECTED.values(), ids=REJECTED.keys())
def test_rejects_with_path_and_message(resource: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert issues_of(resource) == expected


def test_issues_sort_indices_numerically() -> None:
    grant_types = ["basic"] * 11
    grant_types[2] = "two"
    grant_types[10] = "ten"
    assert [path for path, _ in issues_of({"resourceType": "Client", "grant_types": grant_types})] == [
        "Client.grant_types[2]",
        "Client.grant_types[10]",
    ]


def test_invalid_is_a_422_operation_outcome_listing_every_issue() -> None:
    with pytest.raises(Invalid) as caught:
        REGISTRY.validate({"resourceType": "User", "inactive": "no", "twoFactor": {"enabled": 1}})
    assert caught.value.status == 422
    assert caught.value.diagnostics == "User.inactive: expected boolean (and 1 more)"
    assert caught.value.outcome() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "expected boolean",
                "expression": ["User.inactive"],
            },
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "expected boolean",
                "expression": ["User.twoFactor.enabled"],
            },
        ],
    }


def test_one_issue_is_summarised_without_a_count() -> None:
    with pytest.raises(Invalid) as caught:
        REGISTRY.validate({"resourceType": "Registration", "status": 1})
    assert caught.value.diagnostics == "Registration.status: 1 is not one of ['active', 'activated']"


def test_long_values_are_shortened_in_messages() -> None:
    assert issues_of({"resourceType": "Registration", "status": "x" * 200}) == [
        ("Registration.status", "'" + "x" * 76 + "... is not one of ['active', 'activated']")
    ]


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"resourceType": "Patient"}, "unknown resource type 'Patient'"),
        ({"id": "x"}, "unknown resource type None"),
        ({"resourceType": ["User"]}, "unknown resource type ['User']"),
    ],
)
def test_unknown_resource_type(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(Invalid) as caught:
        REGISTRY.validate(resource)
    assert [(i.expression, i.diagnostics) for i in caught.value.issues] == [(("resourceType",), message)]


def test_schema_of_an_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        REGISTRY.schema("Patient")


def write(directory: Path, name: str, schema: dict[str, Any]) -> None:
    (directory / f"{name}.json").write_text(json.dumps(schema), encoding="utf-8")


def test_from_directory_refuses_a_schema_named_for_another_type(tmp_path: Path) -> None:
    write(tmp_path, "User", {"type": "object", "properties": {"resourceType": {"const": "Client"}}})
    with pytest.raises(ValueError, match="properties.resourceType must be"):
        SchemaRegistry.from_directory(tmp_path)


def test_from_directory_refuses_a_malformed_schema(tmp_path: Path) -> None:
    write(tmp_path, "User", {"type": "objekt", "properties": {"resourceType": {"const": "User"}}})
    with pytest.raises(SchemaError):
        SchemaRegistry.from_directory(tmp_path)


def test_from_directory_refuses_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No resource schemas"):
        SchemaRegistry.from_directory(tmp_path)


def test_recursive_definitions_still_validate_at_depth() -> None:
    policy: dict[str, Any] = {"engine": "allow"}
    for _ in range(5):
        policy = {"engine": "complex", "and": [policy]}
    policy["and"][0]["and"][0]["and"][0]["engine"] = "sql"
    assert issues_of({"resourceType": "AccessPolicy", **policy}) == [
        (
            "AccessPolicy.and[0].and[0].and[0].engine",
            "'sql' is not one of ['allow', 'json-schema', 'matcho', 'complex']",
        )
    ]


@pytest.mark.parametrize(
    "resource",
    [*ACCEPTED.values(), *(resource for resource, _ in REJECTED.values())],
    ids=[*ACCEPTED.keys(), *REJECTED.keys()],
)
def test_inlining_definitions_changes_no_verdict(resource: dict[str, Any]) -> None:
    schema = REGISTRY.schema(resource["resourceType"])

    def verdict(schema: dict[str, Any]) -> list[tuple[str, str]]:
        errors = _Validator(schema, format_checker=_FORMATS).iter_errors(resource)
        return sorted((json.dumps(list(error.absolute_path)), error.message) for error in errors)

    assert verdict(_inline_local_refs(schema)) == verdict(schema)


# jsonschema's own `properties`, descending into every subschema: what the shortcut must agree with.
_Descending = extend(
    Draft202012Validator,
    validators={
        "required": _required,
        "additionalProperties": _additional_properties,
        "pattern": _pattern,
    },
)


@pytest.mark.parametrize(
    "resource",
    [*ACCEPTED.values(), *(resource for resource, _ in REJECTED.values())],
    ids=[*ACCEPTED.keys(), *REJECTED.keys()],
)
def test_checking_properties_in_place_changes_no_error(resource: dict[str, Any]) -> None:
    schema = _inline_local_refs(REGISTRY.schema(resource["resourceType"]))

    def errors(validator: Any) -> list[tuple[str, str, str, str]]:
        found = validator(schema, format_checker=_FORMATS).iter_errors(resource)
        return sorted(
            (
                json.dumps(list(e.absolute_path)),
                json.dumps(list(e.absolute_schema_path)),
                e.validator,
                e.message,
            )
            for e in found
        )

    assert errors(_Validator) == errors(_Descending)


def test_a_property_with_its_own_id_resolves_its_references_against_it() -> None:
    schema = {
        "type": "object",
        "properties": {
            "code": {
                "$id": "https://example.org/code",
                "$defs": {"text": {"type": "string", "minLength": 2}},
                "$ref": "#/$defs/text",
            },
        },
    }
    validator = _Validator(schema, format_checker=_FORMATS)
    assert validator.is_valid({"code": "ab"})
    assert [(list(e.absolute_path), e.message) for e in validator.iter_errors({"code": "a"})] == [
        (["code"], "'a' is too short")
    ]


@pytest.mark.parametrize(
    "instance",
    [{"n": True}, {"n": 1.0}, {"n": 2}, {"b": 1}, {"b": False}, {"f": True}, {"f": 1}, {"x": None}, {"x": 3}],
)
def test_type_shortcuts_agree_with_jsonschema_on_booleans_and_numbers(instance: dict[str, Any]) -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "b": {"type": "boolean"},
            "f": {"type": "number"},
            "x": {"type": ["string", "null"]},
        },
    }

    def errors(validator: Any) -> list[tuple[list[Any], str]]:
        return [(list(e.absolute_path), e.message) for e in validator(schema).iter_errors(instance)]

    assert errors(_Validator) == errors(_Descending)

"""Component schemas: the resource schemas of `schemas/` adapted for OpenAPI, their Bundles, and the
shapes of the other endpoints' bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhirauth.http import oauth
from fhirauth.resources.secrets import ENCRYPTED, HASHED

Document = dict[str, Any]

SCHEMA_PREFIX = "#/components/schemas/"


def ref(name: str) -> Document:
    return {"$ref": SCHEMA_PREFIX + name}


def resource_components(resource_type: str, schema: Document) -> dict[str, Document]:
    """The type's schema, its definitions, and its searchset and history Bundles."""
    return {**_component(resource_type, schema), **_bundles_of(resource_type)}


def _component(resource_type: str, schema: Document) -> dict[str, Document]:
    """The type's schema and its `$defs` as components: `#/$defs/x` becomes `<Type>.x`.

    A local `$ref` inside `components.schemas` would resolve against the OpenAPI document, not the
    schema it came from, so the definitions move next to it. Secret fields are marked `writeOnly`.
    """
    defs = schema.get("$defs", {})

    def adapt(node: Any) -> Any:
        if isinstance(node, list):
            return [adapt(item) for item in node]
        if not isinstance(node, dict):
            return node
        adapted = {
            key: adapt(value) for key, value in node.items() if key not in ("$schema", "$defs", "$ref")
        }
        if "$ref" in node:
            adapted.update(_rewrite_ref(resource_type, node["$ref"]))
        return adapted

    components = {resource_type: adapt(schema)}
    for name, definition in defs.items():
        components[f"{resource_type}.{name}"] = adapt(definition)
    for path in HASHED.get(resource_type, ()) + ENCRYPTED.get(resource_type, ()):
        _mark_write_only(components[resource_type], path.split("."))
    return components


_META_SCHEMAS = frozenset(
    {"https://json-schema.org/draft/2020-12/schema", "http://json-schema.org/draft-07/schema#"}
)


def _rewrite_ref(resource_type: str, target: str) -> Document:
    if target.startswith("#/$defs/"):
        return ref(f"{resource_type}.{target.removeprefix('#/$defs/')}")
    if target in _META_SCHEMAS:
        # Any JSON Schema (an AccessPolicy's `schema`): no tool should have to fetch the meta-schema.
        return {"type": ["object", "boolean"]}
    raise ValueError(f"{resource_type}: cannot describe the $ref {target!r} in OpenAPI")


def _mark_write_only(schema: Document, path: list[str]) -> None:
    node = schema
    for part in path:
        node = node.get("properties", {}).get(part, {})
    if node:
        node["writeOnly"] = True


def _meta_of(resource_type: str) -> Document:
    return ref(f"{resource_type}.meta")


def _bundles_of(resource_type: str) -> dict[str, Document]:
    link = {
        "type": "object",
        "required": ["relation", "url"],
        "properties": {"relation": {"type": "string"}, "url": {"type": "string"}},
    }
    summary = {
        "description": f"The {resource_type}; with `_elements`, only those elements (and id, meta)",
        "type": "object",
        "required": ["resourceType", "id", "meta"],
        "properties": {
            "resourceType": {"const": resource_type},
            "id": ref(f"{resource_type}.id"),
            "meta": _meta_of(resource_type),
        },
    }
    searchset = {
        "type": "object",
        "required": ["resourceType", "type", "total", "link", "entry"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "searchset"},
            "total": {"type": ["integer", "null"], "minimum": 0},
            "link": {"type": "array", "items": link},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["resource", "fullUrl"],
                    "properties": {
                        "resource": summary,
                        "fullUrl": {"type": "string"},
                        "search": {"type": "object", "properties": {"mode": {"const": "match"}}},
                    },
                },
            },
        },
    }
    history = {
        "type": "object",
        "required": ["resourceType", "type", "total", "entry"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "history"},
            "total": {"type": "integer", "minimum": 0},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["fullUrl", "request", "response"],
                    "properties": {
                        "fullUrl": {"type": "string"},
                        "resource": {**ref(resource_type), "description": "Absent for a deletion"},
                        "request": {
                            "type": "object",
                            "required": ["method", "url"],
                            "properties": {
                                "method": {"enum": ["POST", "PUT", "DELETE"]},
                                "url": {"type": "string"},
                            },
                        },
                        "response": {
                            "type": "object",
                            "required": ["etag", "lastModified"],
                            "properties": {"etag": {"type": "string"}, "lastModified": {"type": "string"}},
                        },
                    },
                },
            },
        },
    }
    return {f"{resource_type}.searchset": searchset, f"{resource_type}.history": history}


# SMART App Launch: the launch context a code grant's tokens carry (and their refreshes, and introspection).
_SMART_CONTEXT: dict[str, Document] = {
    "patient": {"type": "string", "description": "SMART: the Patient in context (its id)"},
    "encounter": {"type": "string", "description": "SMART: the Encounter in context (its id)"},
    "fhirContext": {"type": "array", "items": {"type": "object"}, "description": "SMART: more context"},
    "need_patient_banner": {"type": "boolean"},
    "smart_style_url": {"type": "string"},
    "intent": {"type": "string"},
    "fhirUser": {"type": "string", "description": "SMART: the FHIR record the user stands for"},
}


def _string_map(*names: str, required: Sequence[str] = ()) -> Document:
    schema: Document = {"type": "object", "properties": {name: {"type": "string"} for name in names}}
    if required:
        schema["required"] = list(required)
    return schema


COMMON_SCHEMAS: dict[str, Document] = {
    "OperationOutcome": {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "id": {"type": "string"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["severity", "code", "diagnostics"],
                    "properties": {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string"},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "MergePatch": {"description": "RFC 7396: `null` removes a member", "type": "object"},
    "JsonPatch": {
        "description": "RFC 6902",
        "type": "array",
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                "path": {"type": "string"},
                "from": {"type": "string"},
                "value": {},
            },
        },
    },
    "Bundle": {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["transaction", "batch", "collection"]},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "fullUrl": {"type": "string", "description": "`urn:uuid:…` may be referenced later"},
                        "resource": {"type": ["object", "array"]},
                        "request": {
                            "type": "object",
                            "required": ["method", "url"],
                            "properties": {
                                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                                "url": {"type": "string"},
                                "ifMatch": {"type": "string"},
                                "ifNoneExist": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
    "BundleResponse": {
        "type": "object",
        "required": ["resourceType", "type", "entry"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["transaction-response", "batch-response"]},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["response"],
                    "properties": {
                        "resource": {"type": "object", "required": ["resourceType", "id"]},
                        "response": {
                            "type": "object",
                            "required": ["status"],
                            "properties": {
                                "status": {"type": "string"},
                                "location": {"type": "string"},
                                "etag": {"type": "string"},
                                "lastModified": {"type": "string"},
                                "outcome": ref("OperationOutcome"),
                            },
                        },
                    },
                },
            },
        },
    },
    "Health": _string_map("status", "storage", required=["status"]),
    "OAuthError": {
        "description": "RFC 6749 §5.2",
        "type": "object",
        "required": ["error", "error_description"],
        "properties": {
            "error": {
                "enum": [
                    "invalid_request",
                    "invalid_client",
                    "invalid_grant",
                    "unauthorized_client",
                    "unsupported_grant_type",
                    "invalid_scope",
                ]
            },
            "error_description": {"type": "string"},
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"enum": ["authorization_code", "password", "client_credentials", "refresh_token"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "code": {"type": "string"},
            "redirect_uri": {"type": "string"},
            "code_verifier": {"type": "string"},
            "username": {"type": "string"},
            "password": {"type": "string"},
            "totp": {"type": "string", "description": "The TOTP code of a user with two-factor on"},
            "refresh_token": {"type": "string"},
            "scope": {"type": "string"},
            "audience": {"type": "string"},
        },
    },
    "TokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "refresh_token": {"type": "string"},
            "scope": {"type": "string"},
            "userinfo": {"type": "object"},
            "id_token": {
                "type": "string",
                "description": "OpenID Connect ID token: for a code issued with the openid scope, and its refreshes",
            },
            **_SMART_CONTEXT,
        },
    },
    "TokenParameters": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"enum": ["access_token", "refresh_token"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
    },
    "Introspection": {
        "type": "object",
        "required": ["active"],
        "properties": {
            "active": {"type": "boolean"},
            "client_id": {"type": "string"},
            "username": {"type": "string"},
            "sub": {"type": "string"},
            "scope": {"type": ["string", "array"]},
            "exp": {"type": "integer"},
            "iat": {"type": "integer"},
            "token_type": {"enum": ["Bearer", "refresh_token"]},
            "iss": {"type": "string"},
            "aud": {"type": ["string", "array"]},
            "jti": {"type": "string"},
            "amr": {
                "description": "How the user signed in (RFC 8176), for the tokens of an OpenID sign-in",
                "type": "array",
                "items": {"type": "string"},
            },
            "acr": {
                "description": "The sign-in's class: urn:fhirauth:acr:pwd or urn:fhirauth:acr:mfa",
                "type": "string",
            },
            **_SMART_CONTEXT,
        },
    },
    "UserInfoClaims": {
        "description": "OpenID Connect Core §5.1: sub and the claims the token's scopes allow (profile, email, phone)",
        "type": "object",
        "required": ["sub"],
        "properties": {
            "sub": {"type": "string"},
            "name": {"type": "string"},
            "given_name": {"type": "string"},
            "family_name": {"type": "string"},
            "middle_name": {"type": "string"},
            "preferred_username": {"type": "string"},
            "locale": {"type": "string"},
            "zoneinfo": {"type": "string"},
            "updated_at": {"type": "integer"},
            "email": {"type": "string"},
            "email_verified": {"type": "boolean"},
            "phone_number": {"type": "string"},
            "phone_number_verified": {"type": "boolean"},
        },
    },
    "ServerMetadata": {
        "description": "RFC 8414 §2",
        "type": "object",
        "required": ["issuer", "token_endpoint", "jwks_uri", "grant_types_supported"],
        "properties": {
            "issuer": {"type": "string"},
            "authorization_endpoint": {"type": "string"},
            "token_endpoint": {"type": "string"},
            "userinfo_endpoint": {"type": "string"},
            "jwks_uri": {"type": "string"},
            "introspection_endpoint": {"type": "string"},
            "revocation_endpoint": {"type": "string"},
            "end_session_endpoint": {"type": "string"},
            "grant_types_supported": {"type": "array", "items": {"type": "string"}},
        },
    },
    "JWKS": {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kty", "kid"],
                    "properties": {"kid": {"type": "string"}},
                },
            }
        },
    },
    "TwoFactorRequest": {
        "type": "object",
        "properties": {"transport": {"type": "string", "description": "Send the first code this way"}},
    },
    "TwoFactorCode": {
        "type": "object",
        "properties": {"token": {"type": ["string", "integer"], "description": "The six-digit TOTP code"}},
    },
    "TwoFactorEnrollment": {
        "type": "object",
        "properties": {
            "uri": {"type": "string", "description": "otpauth://totp/… for the authenticator app"}
        },
    },
    "TwoFactorConfirmed": {
        "type": "object",
        "properties": {"recoveryCodes": {"type": "array", "items": {"type": "string"}}},
    },
    "RecoveryCodes": {
        "type": "object",
        "required": ["recoveryCodes"],
        "properties": {"recoveryCodes": {"type": "array", "items": {"type": "string"}}},
    },
    "Empty": {"type": "object", "maxProperties": 0},
    "SmartConfiguration": {
        "description": "SMART App Launch 2.2 conformance.md",
        "type": "object",
        "required": [
            "token_endpoint",
            "grant_types_supported",
            "capabilities",
            "code_challenge_methods_supported",
        ],
        "properties": {
            "issuer": {"type": "string"},
            "jwks_uri": {"type": "string"},
            "authorization_endpoint": {"type": "string"},
            "token_endpoint": {"type": "string"},
            "introspection_endpoint": {"type": "string"},
            "revocation_endpoint": {"type": "string"},
            "grant_types_supported": {"type": "array", "items": {"type": "string"}},
            "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            "response_types_supported": {"type": "array", "items": {"type": "string"}},
            "code_challenge_methods_supported": {"type": "array", "items": {"const": "S256"}},
            "scopes_supported": {"type": "array", "items": {"type": "string"}},
            "capabilities": {"type": "array", "items": {"type": "string"}},
        },
    },
    "CapabilityStatement": {
        "description": "FHIR R4 CapabilityStatement (the resources themselves are Aidbox-shaped)",
        "type": "object",
        "required": ["resourceType", "status", "date", "kind", "fhirVersion", "format", "rest"],
        "properties": {
            "resourceType": {"const": "CapabilityStatement"},
            "status": {"type": "string"},
            "date": {"type": "string"},
            "kind": {"type": "string"},
            "fhirVersion": {"type": "string"},
            "format": {"type": "array", "items": {"type": "string"}},
            "rest": {"type": "array", "items": {"type": "object"}},
        },
    },
    "LaunchRegistration": {
        "description": "The context an app opened with `launch=` gets in its token response",
        "type": "object",
        "required": ["client"],
        "additionalProperties": False,
        "properties": {
            "client": {"type": "string", "description": "The app's client_id"},
            "user": {"type": "string", "description": "Only this User may use the launch"},
            "patient": {"type": "string"},
            "encounter": {"type": "string"},
            "fhirContext": {"type": "array", "items": {"type": "object"}},
            "need_patient_banner": {"type": "boolean"},
            "smart_style_url": {"type": "string"},
            "intent": {"type": "string"},
        },
    },
    "Launch": {
        "type": "object",
        "required": ["launch", "expires_in"],
        "properties": {"launch": {"type": "string"}, "expires_in": {"type": "integer"}},
    },
    "TwoFactorError": _string_map("error", "error_description", required=["error", "error_description"]),
    "PasskeyOptions": {
        "type": "object",
        "required": ["publicKey"],
        "description": "WebAuthn options for navigator.credentials.create()/get(), binary fields in base64url",
        "properties": {"publicKey": {"type": "object"}},
    },
    "PasskeyCredential": {
        "type": "object",
        "description": "The browser's PublicKeyCredential.toJSON(), binary fields in base64url",
        "required": ["id", "rawId", "type", "response"],
        "properties": {
            "id": {"type": "string"},
            "rawId": {"type": "string"},
            "type": {"const": "public-key"},
            "response": {"type": "object"},
            "authenticatorAttachment": {"type": ["string", "null"]},
        },
    },
    "PasskeyRegistration": {
        "type": "object",
        "required": ["name", "credential"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64},
            "credential": ref("PasskeyCredential"),
        },
    },
    "PasskeyAssertion": {
        "type": "object",
        "required": ["credential"],
        "properties": {"credential": ref("PasskeyCredential")},
    },
    "PasskeyRemoval": {
        "type": "object",
        "required": ["id"],
        "description": "A fresh second factor: `credential` (an assertion) or `token` (a TOTP or recovery code)",
        "properties": {
            "id": {"type": "string"},
            "credential": ref("PasskeyCredential"),
            "token": {"type": ["string", "integer"]},
        },
    },
    "Passkey": {
        "type": "object",
        "required": ["id", "name"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "created": {"type": ["string", "null"]},
            "lastUsed": {"type": ["string", "null"]},
            "transports": {"type": "array", "items": {"type": "string"}},
            "synced": {"type": "boolean"},
        },
    },
    "PasskeyList": {
        "type": "object",
        "required": ["passkeys"],
        "properties": {"passkeys": {"type": "array", "items": ref("Passkey")}},
    },
    "TrustedDevice": {
        "type": "object",
        "required": ["id", "browser", "created", "lastUsed", "expires"],
        "properties": {
            "id": {"type": "string"},
            "browser": {
                "type": "string",
                "description": 'A summary of the browser, e.g. "Firefox on Windows"',
            },
            "created": {"type": "string", "description": "When it was trusted"},
            "lastUsed": {"type": ["string", "null"]},
            "expires": {"type": "string"},
        },
    },
    "TrustedDeviceList": {
        "type": "object",
        "required": ["devices"],
        "properties": {"devices": {"type": "array", "items": ref("TrustedDevice")}},
    },
    "TrustedDevicesForgotten": {
        "type": "object",
        "required": ["revoked"],
        "properties": {
            "revoked": {"type": "integer", "minimum": 0, "description": "How many were forgotten"}
        },
    },
    "PasskeyUse": {
        "type": "object",
        "required": ["amr", "passkey"],
        "properties": {"amr": {"enum": ["hwk", "swk"]}, "passkey": {"type": "string"}},
    },
}

SECURITY_SCHEMES = {
    "basicAuth": {
        "type": "http",
        "scheme": "basic",
        "description": "The root client, or a Client with `basic` in grant_types; at /auth/*: client authentication",
    },
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An access token from /auth/token"},
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": oauth.COOKIE,
        "description": "The browser session set at sign-in",
    },
}

"""What a SMART app discovers: /.well-known/smart-configuration (conformance.md) and the
CapabilityStatement at /metadata, whose `oauth-uris` extension is where fhirclient 4.x and other
SMART v1 clients find the endpoints.

Both are built from the server's RFC 8414 metadata, so the endpoints and the client authentication
methods are written in one place; a capability is listed only when the server does it (a test checks
each against behaviour): `sso-openid-connect` when the metadata lists the `openid` scope (id_tokens
are issued), `client-confidential-asymmetric` when it lists `private_key_jwt`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhirauth import __version__
from fhirauth.auth.smart import scopes

Document = dict[str, Any]

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
# fhirclient parses the statement with its R4 models; the resources themselves are Aidbox-shaped.
FHIR_VERSION = "4.0.1"
INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type")
CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "authorize-post",
)
_SMART_GRANTS = ("authorization_code", "client_credentials", "refresh_token")
_SMART_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")


def _openid(metadata: Document) -> bool:
    return "openid" in metadata.get("scopes_supported", ())


def smart_configuration(metadata: Document) -> Document:
    """The smart-configuration document of a server whose RFC 8414 metadata is `metadata`."""
    auth_methods = [
        m for m in metadata.get("token_endpoint_auth_methods_supported", ()) if m in _SMART_AUTH_METHODS
    ]
    capabilities = list(CAPABILITIES)
    config: Document = {}
    if _openid(metadata):
        capabilities.append("sso-openid-connect")
        # conformance.md: issuer and jwks_uri with sso-openid-connect, and only then.
        config.update(issuer=metadata["issuer"], jwks_uri=metadata["jwks_uri"])
    if "private_key_jwt" in auth_methods:
        capabilities.append("client-confidential-asymmetric")
        algs = metadata.get("token_endpoint_auth_signing_alg_values_supported")
        if algs:
            config["token_endpoint_auth_signing_alg_values_supported"] = algs
    config.update(
        {
            "authorization_endpoint": metadata["authorization_endpoint"],
            "token_endpoint": metadata["token_endpoint"],
            "introspection_endpoint": metadata["introspection_endpoint"],
            "revocation_endpoint": metadata["revocation_endpoint"],
            "grant_types_supported": [g for g in metadata["grant_types_supported"] if g in _SMART_GRANTS],
            "token_endpoint_auth_methods_supported": auth_methods,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": [*(["openid"] if _openid(metadata) else []), *scopes.SUPPORTED],
            "capabilities": capabilities,
        }
    )
    return config


def capability_statement(metadata: Document, resource_types: Iterable[str], date: str) -> Document:
    """An R4 CapabilityStatement of the resource API, with the SMART security extension."""
    oauth_uris = [
        {"url": "authorize", "valueUri": metadata["authorization_endpoint"]},
        {"url": "token", "valueUri": metadata["token_endpoint"]},
        {"url": "introspect", "valueUri": metadata["introspection_endpoint"]},
        {"url": "revoke", "valueUri": metadata["revocation_endpoint"]},
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "fhirauth", "version": __version__},
        "implementation": {"description": "fhirauth", "url": metadata["issuer"]},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": True,
                    "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}]}],
                    "extension": [{"url": OAUTH_URIS, "extension": oauth_uris}],
                },
                "resource": [
                    {
                        "type": resource_type,
                        "interaction": [{"code": code} for code in INTERACTIONS],
                        "versioning": "versioned",
                        "readHistory": True,
                        "updateCreate": True,
                        "conditionalCreate": True,
                    }
                    for resource_type in sorted(resource_types)
                ],
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }

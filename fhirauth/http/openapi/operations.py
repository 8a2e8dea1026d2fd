"""The operations: what each documented endpoint takes and answers, with the statuses it really returns.

Each documented endpoint maps to a function that describes it; the resource endpoints are described
once per resource type (PER_TYPE), the others once (FIXED).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fhirauth.http import health, oauth, rest, smart, trusted_devices_api, twofactor_api, webauthn_api
from fhirauth.http.openapi.components import Document, ref
from fhirauth.resources.search import MAX_COUNT, MAX_PAGE

Describe = Callable[[str], Document]

RESOURCE_TYPES = ["application/json", "application/fhir+json", "application/json+fhir", "text/yaml"]
REQUEST_TYPES = ["application/json", "application/fhir+json", "text/yaml"]
FORM = "application/x-www-form-urlencoded"

_STATUS_TEXT = {
    400: "Malformed request: bad JSON or YAML, a NUL or `$` key, nesting deeper than 32, a bad parameter",
    401: "No credentials, or credentials that are wrong (`WWW-Authenticate` says which schemes work)",
    403: "Authenticated, but no AccessPolicy allows the request",
    404: "No such resource, version or resource type",
    409: "The resource already exists, or it kept changing concurrently",
    410: "The resource was deleted",
    412: "`If-Match` does not match the current version, or a condition matched several resources",
    413: "The request body is larger than the configured limit (1 MiB by default)",
    415: "The request body is neither JSON nor YAML",
    422: "The resource does not conform to its schema (one issue per violation, with its path)",
    429: "Too many attempts; `Retry-After` says when to try again",
    503: "Storage is unreachable; `Retry-After` says when to try again",
}

# Errors every resource operation can meet: credentials (and their failures' limits), policies,
# storage. 400 is a malformed parameter, header or body, so reads without parameters never answer it.
_GUARDED = (401, 403, 429, 503)
_WITH_BODY = (400, 413, 415)


def _content(schema: Document, media_types: Iterable[str]) -> Document:
    return {media_type: {"schema": schema} for media_type in media_types}


def _header(description: str, *, required: bool = True) -> Document:
    return {"description": description, "required": required, "schema": {"type": "string"}}


_VERSION_HEADERS = {
    "ETag": _header('The version as a weak entity tag: `W/"<versionId>"`'),
    "Last-Modified": _header("When this version was written (HTTP date)"),
}
_LOCATION = {"Location": _header("`/<Type>/<id>/_history/<versionId>`")}
_NO_STORE = {"Cache-Control": _header("`no-store`: the response holds credentials")}
_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before trying again")}
_CHALLENGE = {"WWW-Authenticate": _header("The authentication schemes this endpoint accepts")}


def _outcome_response(status: int) -> Document:
    response: Document = {
        "description": _STATUS_TEXT[status],
        "content": _content(ref("OperationOutcome"), RESOURCE_TYPES),
    }
    if status == 401:
        response["headers"] = _CHALLENGE
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _oauth_response(status: int) -> Document:
    response: Document = {
        "description": "RFC 6749 §5.2 error",
        "headers": _NO_STORE,
        "content": _content(ref("OAuthError"), ["application/json"]),
    }
    if status == 401:
        # RFC 6749 §5.2: only a client that tried HTTP authentication is told which scheme to use.
        response["headers"] = {**_NO_STORE, "WWW-Authenticate": _header("Basic", required=False)}
    if status == 429:
        response["description"] = "Too many requests from this address, or for this account"
        response["headers"] = {**_NO_STORE, **_RETRY_AFTER}
    if status == 503:
        # Storage's outage answers as everywhere else; a full password-hashing queue as RFC 6749 does.
        response["description"] = (
            "Storage is unreachable (an OperationOutcome), or every password-hashing thread is busy"
            " (`temporarily_unavailable`); `Retry-After` says when to try again"
        )
        response["headers"] = {**_NO_STORE, **_RETRY_AFTER}
        either = {"oneOf": [ref("OperationOutcome"), ref("OAuthError")]}
        response["content"] = _content(either, ["application/json"])
    return response


RESPONSES = {
    **{f"Outcome{status}": _outcome_response(status) for status in _STATUS_TEXT},
    **{f"OAuth{status}": _oauth_response(status) for status in (400, 401, 429, 503)},
}


def _outcomes(statuses: Iterable[int]) -> Document:
    return {
        str(status): {"$ref": f"#/components/responses/Outcome{status}"} for status in sorted(set(statuses))
    }


def _query(name: str, schema: Document, description: str) -> Document:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path_param(name: str, schema: Document, description: str) -> Document:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


_FORMAT = _query("_format", {"enum": ["json", "yaml"]}, "Answer in this format, whatever `Accept` says")
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Only if the current version is this one: `W/"3"` or `3`',
    "schema": {"type": "string"},
}
_IF_MATCH_OR_ANY = {**_IF_MATCH, "description": f"{_IF_MATCH['description']}; `*`: only if it exists"}
_VID = _path_param("vid", {"type": "string", "pattern": "^[0-9]+$"}, "A versionId")


def _id_param(resource_type: str) -> Document:
    return _path_param("id", ref(f"{resource_type}.id"), f"The {resource_type}'s id")


def _ok(description: str, schema: Document, headers: Document | None = None) -> Document:
    response: Document = {"description": description, "content": _content(schema, RESOURCE_TYPES)}
    if headers:
        response["headers"] = headers
    return response


def _a(resource_type: str) -> str:
    # By sound: an AccessPolicy, a User.
    return f"an {resource_type}" if resource_type[0] in "AEIO" else f"a {resource_type}"


def _resource_body(resource_type: str) -> Document:
    return {
        "required": True,
        "description": f"The {resource_type}, as JSON or YAML; `meta` is set by the server",
        "content": _content(ref(resource_type), REQUEST_TYPES),
    }


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: Document,
    *,
    parameters: Sequence[Document] = (),
    body: Document | None = None,
    security: list[Document] | None = None,
) -> Document:
    operation: Document = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = responses
    if security is not None:
        operation["security"] = security
    return operation


# The resource API, once per resource type.


def _search(resource_type: str) -> Document:
    parameters = [
        _query("_count", {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}, "Page size (default 100)"),
        _query("_page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "Page number, from 1"),
        _query("_sort", {"type": "string"}, "Comma-separated paths; `-path` sorts descending"),
        _query("_elements", {"type": "string"}, "Comma-separated top-level elements to return"),
        _query("_id", {"type": "string"}, "Comma-separated ids"),
        _FORMAT,
    ]
    summary = f"Search {resource_type} (also `field=value` and `dotted.field=a,b` equality filters)"
    responses = {
        "200": _ok("A searchset Bundle", ref(f"{resource_type}.searchset")),
        **_outcomes((*_GUARDED, 400)),
    }
    return _operation(f"search{resource_type}", resource_type, summary, responses, parameters=parameters)


def _create(resource_type: str) -> Document:
    if_none_exist = {
        "name": "If-None-Exist",
        "in": "header",
        "required": False,
        "description": (
            "Conditional create: search parameters; a match is returned as it is (200) to a caller who may "
            "read it (GET /{Type}/{id}), and is a 200 without a body to one who may not"
        ),
        "schema": {"type": "string"},
    }
    parameters = [_query("_id", {"type": "string"}, "Conditional create by id"), if_none_exist, _FORMAT]
    responses = {
        "200": _ok("Conditional create: the one existing match", ref(resource_type), _VERSION_HEADERS),
        "201": _ok("Created", ref(resource_type), {**_VERSION_HEADERS, **_LOCATION}),
        **_outcomes((*_GUARDED, *_WITH_BODY, 409, 412, 422)),
    }
    return _operation(
        f"create{resource_type}",
        resource_type,
        f"Create {_a(resource_type)} (an `id` in the body is kept)",
        responses,
        parameters=parameters,
        body=_resource_body(resource_type),
    )


def _read(resource_type: str) -> Document:
    responses = {
        "200": _ok(f"The current {resource_type}", ref(resource_type), _VERSION_HEADERS),
        **_outcomes((*_GUARDED, 404, 410)),
    }
    return _operation(
        f"read{resource_type}",
        resource_type,
        f"Read {_a(resource_type)}",
        responses,
        parameters=[_id_param(resource_type), _FORMAT],
    )


def _update(resource_type: str) -> Document:
    responses = {
        "200": _ok("Updated", ref(resource_type), _VERSION_HEADERS),
        "201": _ok("Created", ref(resource_type), {**_VERSION_HEADERS, **_LOCATION}),
        **_outcomes((*_GUARDED, *_WITH_BODY, 409, 412, 422)),
    }
    return _operation(
        f"update{resource_type}",
        resource_type,
        f"Create or replace {_a(resource_type)}",
        responses,
        parameters=[_id_param(resource_type), _IF_MATCH_OR_ANY, _FORMAT],
        body=_resource_body(resource_type),
    )


def _patch(resource_type: str) -> Document:
    method = _query(
        "_method", {"enum": ["json-patch", "merge-patch"]}, "Patch kind, whatever the body's media type says"
    )
    body = {
        "required": True,
        "description": "A merge patch (RFC 7396, an object) or a JSON Patch (RFC 6902, an array)",
        "content": {
            "application/merge-patch+json": {"schema": ref("MergePatch")},
            "application/json-patch+json": {"schema": ref("JsonPatch")},
            "application/json": {"schema": {"oneOf": [ref("MergePatch"), ref("JsonPatch")]}},
            "text/yaml": {"schema": {"oneOf": [ref("MergePatch"), ref("JsonPatch")]}},
        },
    }
    responses = {
        "200": _ok("Patched", ref(resource_type), _VERSION_HEADERS),
        **_outcomes((*_GUARDED, *_WITH_BODY, 404, 409, 410, 412, 422)),
    }
    return _operation(
        f"patch{resource_type}",
        resource_type,
        f"Patch {_a(resource_type)}",
        responses,
        parameters=[_id_param(resource_type), _IF_MATCH, method, _FORMAT],
        body=body,
    )


def _delete(resource_type: str) -> Document:
    responses = {
        "200": _ok(f"The deleted {resource_type}", ref(resource_type)),
        "204": {"description": "There was no such resource"},
        **_outcomes((*_GUARDED, 400, 409, 412)),
    }
    return _operation(
        f"delete{resource_type}",
        resource_type,
        f"Delete {_a(resource_type)}",
        responses,
        parameters=[_id_param(resource_type), _IF_MATCH, _FORMAT],
    )


def _history(resource_type: str) -> Document:
    responses = {
        "200": _ok("A history Bundle, newest version first", ref(f"{resource_type}.history")),
        **_outcomes((*_GUARDED, 404)),
    }
    return _operation(
        f"history{resource_type}",
        resource_type,
        f"Every version of {_a(resource_type)}",
        responses,
        parameters=[_id_param(resource_type), _FORMAT],
    )


def _vread(resource_type: str) -> Document:
    responses = {
        "200": _ok("That version", ref(resource_type), _VERSION_HEADERS),
        **_outcomes((*_GUARDED, 404, 410)),
    }
    return _operation(
        f"vread{resource_type}",
        resource_type,
        f"Read one version of {_a(resource_type)}",
        responses,
        parameters=[_id_param(resource_type), _VID, _FORMAT],
    )


PER_TYPE: dict[Callable[..., Any], Describe] = {
    rest.search: _search,
    rest.create: _create,
    rest.read: _read,
    rest.update: _update,
    rest.patch: _patch,
    rest.delete: _delete,
    rest.history: _history,
    rest.vread: _vread,
}


# Fixed paths.


def _bundle(path: str) -> Document:
    body = {
        "required": True,
        "description": "A transaction (all or nothing), batch (each entry on its own) or collection Bundle",
        "content": _content(ref("Bundle"), REQUEST_TYPES),
    }
    responses = {
        "200": _ok("A transaction-response or batch-response Bundle", ref("BundleResponse")),
        **_outcomes((*_GUARDED, *_WITH_BODY, 404, 409, 410, 412, 422)),
    }
    return _operation("bundle", "Bundles", "Process a Bundle", responses, parameters=[_FORMAT], body=body)


def _health(path: str) -> Document:
    responses = {
        "200": {"description": "Storage answers", "content": _content(ref("Health"), ["application/json"])},
        "503": {
            "description": "Storage is unreachable",
            "content": _content(ref("Health"), ["application/json"]),
        },
    }
    return _operation("health", "System", "Liveness and storage reachability", responses, security=[])


_OAUTH_SECURITY: list[Document] = [{"basicAuth": []}, {}]


def _oauth_body(schema: str) -> Document:
    return {"required": True, "content": _content(ref(schema), [FORM, "application/json"])}


def _oauth_errors(*statuses: int) -> Document:
    return {
        **{str(status): {"$ref": f"#/components/responses/OAuth{status}"} for status in (*statuses, 503)},
    }


def _token(path: str) -> Document:
    responses = {
        "200": {
            "description": "Tokens (RFC 6749 §5.1)",
            "headers": _NO_STORE,
            "content": _content(ref("TokenResponse"), ["application/json"]),
        },
        **_oauth_errors(400, 401, 429),
    }
    summary = "Token endpoint: authorization_code, password (+`totp`), client_credentials, refresh_token"
    return _operation(
        "token", "OAuth", summary, responses, body=_oauth_body("TokenRequest"), security=_OAUTH_SECURITY
    )


def _introspect(path: str) -> Document:
    responses = {
        "200": {
            "description": "Whether the token is active, and its claims (RFC 7662 §2.2)",
            "headers": _NO_STORE,
            "content": _content(ref("Introspection"), ["application/json"]),
        },
        **_oauth_errors(400, 401, 429),
    }
    return _operation(
        "introspect",
        "OAuth",
        "Token introspection (RFC 7662), confidential clients only: their own tokens and those of the"
        " clients their `introspect_clients` names (the root client: every token); others are inactive",
        responses,
        body=_oauth_body("TokenParameters"),
        security=_OAUTH_SECURITY,
    )


def _revoke(path: str) -> Document:
    responses = {
        "200": {
            "description": "Revoked, or it was not a token (RFC 7009 §2.2)",
            "headers": _NO_STORE,
            "content": _content({"type": "object", "maxProperties": 0}, ["application/json"]),
        },
        **_oauth_errors(400, 401, 429),
    }
    return _operation(
        "revoke",
        "OAuth",
        "Token revocation (RFC 7009) of the client's own tokens (the root client: any token)",
        responses,
        body=_oauth_body("TokenParameters"),
        security=_OAUTH_SECURITY,
    )


_USER_SECURITY: list[Document] = [{"bearerAuth": []}, {"sessionCookie": []}]


def _userinfo(path: str) -> Document:
    responses = {
        "200": {
            "description": (
                "With the openid scope, the OpenID claims its scopes allow (a JWT signed as the Client's "
                "userinfo_signed_response_alg says, if it says); otherwise the signed-in User, without secrets"
            ),
            "headers": _NO_STORE,
            "content": {
                "application/json": {"schema": {"oneOf": [ref("UserInfoClaims"), ref("User")]}},
                "application/jwt": {"schema": {"type": "string"}},
            },
        },
        **_outcomes((401, 503)),
    }
    return _operation(
        "userinfo",
        "OAuth",
        "The user a bearer token or browser session belongs to",
        responses,
        security=_USER_SECURITY,
    )


def _end_session(path: str) -> Document:
    responses = {
        "204": {"description": "The session ended; its tokens no longer work"},
        **_outcomes((401, 503)),
    }
    return _operation(
        "endSession",
        "OAuth",
        "End the session of this bearer token or browser session (Aidbox)",
        responses,
        security=_USER_SECURITY,
    )


def _discovery(path: str) -> Document:
    responses = {
        "200": {
            "description": "Authorization server metadata",
            "content": _content(ref("ServerMetadata"), ["application/json"]),
        },
        **_outcomes((503,)),
    }
    operation_id = "openidConfiguration" if "openid" in path else "authorizationServerMetadata"
    summary = "OpenID discovery" if "openid" in path else "OAuth 2.0 authorization server metadata (RFC 8414)"
    return _operation(operation_id, "OAuth", summary, responses, security=[])


def _jwks(path: str) -> Document:
    responses = {
        "200": {
            "description": "The public keys that verify JWT access tokens",
            "content": _content(ref("JWKS"), ["application/json"]),
        },
        **_outcomes((503,)),
    }
    return _operation("jwks", "OAuth", "JSON Web Key Set (RFC 7517)", responses, security=[])


def _smart_configuration(path: str) -> Document:
    responses = {
        "200": {
            "description": "SMART App Launch configuration (conformance.md)",
            "content": _content(ref("SmartConfiguration"), ["application/json"]),
        },
        **_outcomes((503,)),
    }
    return _operation("smartConfiguration", "SMART", "SMART App Launch discovery", responses, security=[])


def _capability_statement(path: str) -> Document:
    responses = {
        "200": _ok(
            "R4 CapabilityStatement: resource types, interactions, SMART oauth-uris",
            ref("CapabilityStatement"),
        ),
        **_outcomes((503,)),
    }
    return _operation(
        "capabilityStatement", "SMART", "What the API serves, and where to authorize", responses, security=[]
    )


def _register_launch(path: str) -> Document:
    responses = {
        "201": {
            "description": "The launch id to open the app with (`launch=`), and how long it lives",
            "headers": _NO_STORE,
            "content": _content(ref("Launch"), ["application/json"]),
        },
        **_outcomes((400, 401, 403, 413, 415, 422, 503)),
    }
    body = {"required": True, "content": _content(ref("LaunchRegistration"), REQUEST_TYPES)}
    return _operation(
        "registerLaunch",
        "SMART",
        "Register an EHR launch context (root client, or a client with smart.launch_registration)",
        responses,
        body=body,
        security=[{"basicAuth": []}, {"bearerAuth": []}],
    )


_TWO_FACTOR: dict[str, tuple[str, str, str, str]] = {
    "request": (
        "twoFactorRequest",
        "Start enrolment: the otpauth URI, or a code sent through `transport`",
        "TwoFactorRequest",
        "TwoFactorEnrollment",
    ),
    "confirm": ("twoFactorConfirm", "Confirm enrolment with a code", "TwoFactorCode", "TwoFactorConfirmed"),
    "disable": ("twoFactorDisable", "Turn two-factor off with a code", "TwoFactorCode", "Empty"),
    "verify": (
        "twoFactorVerify",
        "Check a code again before a sensitive action (step-up)",
        "TwoFactorCode",
        "Empty",
    ),
    "recovery-codes": (
        "twoFactorRecoveryCodes",
        "New recovery codes (the old ones stop working)",
        "TwoFactorCode",
        "RecoveryCodes",
    ),
}


def _two_factor(path: str) -> Document:
    operation_id, summary, request, answer = _TWO_FACTOR[path.rsplit("/", 1)[1]]
    refused = {"headers": _RETRY_AFTER, "content": _content(ref("TwoFactorError"), ["application/json"])}
    responses = {
        "200": {"description": "Done", "content": _content(ref(answer), ["application/json"])},
        **_outcomes((400, 401, 413, 415, 503)),
        "403": {
            "description": "The token was not issued to a first-party client",
            "content": _content(ref("TwoFactorError"), ["application/json"]),
        },
        "422": {
            "description": "Refused: wrong code, nothing pending for this sign-in (none, expired, or another's), already on",
            "content": _content(ref("TwoFactorError"), ["application/json"]),
        },
        "429": {
            "description": "Locked out after wrong codes, or too many requests from this address",
            **refused,
        },
    }
    body = {"required": False, "content": _content(ref(request), ["application/json", "text/yaml"])}
    return _operation(
        operation_id, "Two-factor", summary, responses, body=body, security=[{"bearerAuth": []}]
    )


_PASSKEYS: dict[str, tuple[str, str, str | None, str, str]] = {
    "GET /app/auth/two-factor/passkeys": ("passkeyList", "The user's passkeys", None, "PasskeyList", "200"),
    "POST /app/auth/two-factor/passkeys/registration/options": (
        "passkeyRegistrationOptions",
        "Begin registering a passkey: options for navigator.credentials.create()",
        None,
        "PasskeyOptions",
        "200",
    ),
    "POST /app/auth/two-factor/passkeys/registration": (
        "passkeyRegister",
        "Finish registering a passkey with the browser's answer and a name",
        "PasskeyRegistration",
        "Passkey",
        "201",
    ),
    "POST /app/auth/two-factor/passkeys/authentication/options": (
        "passkeyAuthenticationOptions",
        "Begin a passkey step-up: options for navigator.credentials.get()",
        None,
        "PasskeyOptions",
        "200",
    ),
    "POST /app/auth/two-factor/passkeys/authentication": (
        "passkeyAuthenticate",
        "Finish a passkey step-up (or the confirmation a removal needs)",
        "PasskeyAssertion",
        "PasskeyUse",
        "200",
    ),
    "POST /app/auth/two-factor/passkeys/remove": (
        "passkeyRemove",
        "Remove a passkey, with a fresh second factor",
        "PasskeyRemoval",
        "Empty",
        "200",
    ),
}


def _passkeys(method: str, path: str) -> Document:
    operation_id, summary, request, answer, status = _PASSKEYS[f"{method} {path}"]
    refused = {"content": _content(ref("TwoFactorError"), ["application/json"])}
    responses = {
        status: {"description": "Done", "content": _content(ref(answer), ["application/json"])},
        **_outcomes((400, 401, 413, 415, 503)),
        "403": {"description": "The token was not issued to a first-party client", **refused},
        "422": {
            "description": "Refused: the challenge is unknown, used, expired or another sign-in's; the passkey "
            "is not the user's; its response does not verify; its counter went backwards",
            **refused,
        },
        "429": {"description": "Too many requests from this address", "headers": _RETRY_AFTER, **refused},
    }
    body = (
        {"required": True, "content": _content(ref(request), ["application/json"])}
        if request is not None
        else None
    )
    return _operation(operation_id, "Passkeys", summary, responses, body=body, security=[{"bearerAuth": []}])


def _passkeys_get(path: str) -> Document:
    return _passkeys("GET", path)


def _passkeys_post(path: str) -> Document:
    return _passkeys("POST", path)


_TRUSTED_DEVICES: dict[str, tuple[str, str, str]] = {
    "GET /app/auth/two-factor/trusted-devices": (
        "trustedDeviceList",
        "The browsers the user trusted to skip the second factor",
        "TrustedDeviceList",
    ),
    "DELETE /app/auth/two-factor/trusted-devices": (
        "trustedDeviceForgetAll",
        "Forget every trusted device of the user",
        "TrustedDevicesForgotten",
    ),
    "DELETE /app/auth/two-factor/trusted-devices/{id}": (
        "trustedDeviceForget",
        "Forget one trusted device",
        "Empty",
    ),
}


def _trusted_devices(method: str, path: str) -> Document:
    operation_id, summary, answer = _TRUSTED_DEVICES[f"{method} {path}"]
    refused = {"content": _content(ref("TwoFactorError"), ["application/json"])}
    responses = {
        "200": {"description": "Done", "content": _content(ref(answer), ["application/json"])},
        **_outcomes((401, 503)),
        "403": {"description": "The token was not issued to a first-party client", **refused},
        "429": {"description": "Too many requests from this address", "headers": _RETRY_AFTER, **refused},
    }
    parameters = []
    if "{id}" in path:
        parameters.append(_path_param("id", {"type": "string"}, "The device's id"))
        responses["422"] = {"description": "The user has no such trusted device", **refused}
    return _operation(
        operation_id,
        "Trusted devices",
        summary,
        responses,
        parameters=parameters,
        security=[{"bearerAuth": []}],
    )


def _trusted_devices_get(path: str) -> Document:
    return _trusted_devices("GET", path)


def _trusted_devices_delete(path: str) -> Document:
    return _trusted_devices("DELETE", path)


FIXED: dict[Callable[..., Any], Describe] = {
    rest.bundle: _bundle,
    health.health: _health,
    oauth.token: _token,
    oauth.introspect: _introspect,
    oauth.revoke: _revoke,
    oauth.userinfo: _userinfo,
    oauth.end_session: _end_session,
    oauth.discovery: _discovery,
    oauth.jwks: _jwks,
    smart.configuration: _smart_configuration,
    smart.capabilities: _capability_statement,
    smart.register_launch: _register_launch,
    twofactor_api.request_enrollment: _two_factor,
    twofactor_api.confirm: _two_factor,
    twofactor_api.disable: _two_factor,
    twofactor_api.verify: _two_factor,
    twofactor_api.recovery_codes: _two_factor,
    webauthn_api.list_passkeys: _passkeys_get,
    webauthn_api.registration_options: _passkeys_post,
    webauthn_api.register: _passkeys_post,
    webauthn_api.authentication_options: _passkeys_post,
    webauthn_api.authenticate: _passkeys_post,
    webauthn_api.remove: _passkeys_post,
    trusted_devices_api.list_devices: _trusted_devices_get,
    trusted_devices_api.forget_all: _trusted_devices_delete,
    trusted_devices_api.forget: _trusted_devices_delete,
}

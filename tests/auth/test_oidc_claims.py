"""The OpenID Connect pieces that need no server: the hash claims (Core's own vectors), the response
types, the request that resumes after a sign-in, and how long the keys of ID tokens stay published."""

from __future__ import annotations

import pytest

from fhirauth.auth.flows import AUTHORIZATION_CODE, IMPLICIT
from fhirauth.auth.oauth_errors import InvalidRequest
from fhirauth.auth.oidc.prompt import after_sign_in, read_max_age, read_prompt, too_old
from fhirauth.auth.oidc.responses import ResponseMode, response_type
from fhirauth.auth.tokens import longest_jwt_lifetime
from fhirauth.services import Services


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_at_hash_and_c_hash_match_core_appendix_a(services: Services) -> None:
    # Core Appendix A.3 (at_hash) and A.4 (c_hash), RS256: what an ID token's signer hashes with.
    signer = await services.keys.signer_for("RS256")
    assert signer.half_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y") == "77QmUPtjPfzWtF2AnpK9RQ"
    assert (
        signer.half_hash("Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk")
        == "LDktKdoQak3Pk0cnXxCltA"
    )


@pytest.mark.parametrize(
    ("value", "name", "flows", "openid", "mode"),
    [
        ("code", "code", (AUTHORIZATION_CODE,), False, ResponseMode.QUERY),
        ("token", "token", (IMPLICIT,), False, ResponseMode.FRAGMENT),
        ("id_token", "id_token", (IMPLICIT,), True, ResponseMode.FRAGMENT),
        ("token id_token", "id_token token", (IMPLICIT,), True, ResponseMode.FRAGMENT),
        ("id_token code", "code id_token", (AUTHORIZATION_CODE, IMPLICIT), True, ResponseMode.FRAGMENT),
        ("token code", "code token", (AUTHORIZATION_CODE, IMPLICIT), True, ResponseMode.FRAGMENT),
        (
            "token id_token code",
            "code id_token token",
            (AUTHORIZATION_CODE, IMPLICIT),
            True,
            ResponseMode.FRAGMENT,
        ),
    ],
)
def test_response_types(
    value: str, name: str, flows: tuple[str, ...], openid: bool, mode: ResponseMode
) -> None:
    kind = response_type(value)
    assert kind is not None
    assert (kind.name, kind.flows, kind.openid, kind.default_mode) == (name, flows, openid, mode)
    assert kind.allows(ResponseMode.QUERY) is (name == "code")
    assert kind.allows(ResponseMode.FRAGMENT) and kind.allows(ResponseMode.FORM_POST)


@pytest.mark.parametrize("value", ["", "none", "code code", "Code", "code  token", " code", "code\ttoken"])
def test_unsupported_response_types(value: str) -> None:
    assert response_type(value) is None


@pytest.mark.parametrize(
    ("query", "resumed"),
    [
        ("client_id=a&prompt=login&state=s", "client_id=a&state=s"),
        ("client_id=a&prompt=login+consent", "client_id=a&prompt=consent"),
        ("client_id=a&max_age=0&prompt=consent", "client_id=a&prompt=consent"),
        ("client_id=a&max_age=600", "client_id=a"),
        # Nothing to drop: the query goes back byte for byte.
        ("client_id=a&prompt=consent&state=%2Fx", "client_id=a&prompt=consent&state=%2Fx"),
        ("client_id=a&prompt=none", "client_id=a&prompt=none"),
    ],
)
def test_after_a_sign_in_prompt_login_and_max_age_are_answered(query: str, resumed: str) -> None:
    assert after_sign_in(query) == resumed


def test_prompt_and_max_age_values() -> None:
    assert read_prompt(None) == read_prompt("") == frozenset()
    assert read_prompt("login consent") == {"login", "consent"}
    for bad in ("none login", "select_account", "LOGIN", "login  consent"):
        with pytest.raises(InvalidRequest):
            read_prompt(bad)
    assert (read_max_age(None), read_max_age(""), read_max_age("0"), read_max_age("9999999999")) == (
        None,
        None,
        0,
        9999999999,
    )
    for bad in ("-1", "+1", "1.0", "١٢", "10000000000"):
        with pytest.raises(InvalidRequest):
            read_max_age(bad)


def test_too_old() -> None:
    assert too_old(None, 0, 10**9) is False
    assert too_old(0, 100, 100) is True
    assert (too_old(60, 100, 160), too_old(60, 100, 161)) == (False, True)


def test_the_keys_of_id_tokens_stay_published_as_long_as_the_id_tokens_live() -> None:
    # An opaque access token's code or implicit flow still signs ID tokens, as long-lived as its tokens.
    code_flow = {"id": "a", "auth": {"authorization_code": {"access_token_expiration": 86400}}}
    implicit_flow = {"id": "b", "auth": {"implicit": {"access_token_expiration": 7200}}}
    password_flow = {"id": "c", "auth": {"password": {"access_token_expiration": 90000}}}
    assert longest_jwt_lifetime([implicit_flow, password_flow]) == 7200
    assert longest_jwt_lifetime([code_flow, implicit_flow, password_flow]) == 86400

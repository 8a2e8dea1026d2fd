"""AccessPolicy engines, matcho one feature at a time, linked vs global policies, the cache, broken policies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fhirauth.app import INDEXES, build_services
from fhirauth.auth.matcho import MatchoError, compile_matcho
from fhirauth.auth.policies import CACHE_SECONDS, PolicyError, compile_policy, compile_rule
from fhirauth.auth.principal import Principal
from fhirauth.clock import ManualClock
from fhirauth.errors import Forbidden, NotAuthenticated
from fhirauth.services import Services
from fhirauth.storage.backends import open_storage
from tests.api.conftest import settings_for

ANN = {"resourceType": "User", "id": "ann", "email": "ann@example.org", "data": {"role": "nurse"}}
API = {"resourceType": "Client", "id": "api", "grant_types": ["basic"]}
OTHER = {"resourceType": "Client", "id": "other", "grant_types": ["basic"]}
WEB = {"resourceType": "Client", "id": "web", "grant_types": ["implicit"]}

# The Aidbox demo's global policy for its 2FA operations (aidbox-research §3.3), verbatim.
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


def request(method: str = "get", uri: str = "/User", **extra: Any) -> dict[str, Any]:
    return {"request-method": method, "uri": uri, "scheme": "http", "params": {}, "headers": {}, **extra}


def matches(pattern: Any, subject: dict[str, Any]) -> bool:
    return compile_matcho(pattern)(subject)


# matcho


def test_matcho_object_is_a_nested_subset() -> None:
    pattern = {"user": {"data": {"role": "nurse"}}}
    assert matches(pattern, request(user=ANN))
    assert not matches(pattern, request(user={**ANN, "data": {"role": "admin"}}))
    assert not matches(pattern, request(user={**ANN, "data": "nurse"}))
    assert not matches(pattern, request())
    assert matches({}, request())


def test_matcho_scalars_compare_by_value_without_mixing_types() -> None:
    assert matches({"request-method": "get"}, request("get"))
    assert not matches({"request-method": "get"}, request("post"))
    assert matches({"body": {"active": True}}, request(body={"active": True}))
    assert not matches({"body": {"active": True}}, request(body={"active": 1}))
    assert not matches({"body": {"n": 1}}, request(body={"n": True}))
    assert not matches({"body": {"n": 1}}, request(body={"n": "1"}))
    assert matches({"body": {"n": 1}}, request(body={"n": 1.0}))
    assert matches({"body": {"gone": None}}, request(body={}))


def test_matcho_hash_string_is_a_searched_regex() -> None:
    pattern = {"uri": "#^/User(/[a-z]+)?$"}
    assert matches(pattern, request(uri="/User"))
    assert matches(pattern, request(uri="/User/ann"))
    assert not matches(pattern, request(uri="/Users"))
    assert not matches(pattern, request(uri="/User/ann/_history"))
    # `$` is the end of the text, not "before a final newline".
    assert not matches(pattern, request(uri="/User/ann\n"))
    # Searched, not anchored: "#User" is found anywhere.
    assert matches({"uri": "#User"}, request(uri="/x/User/y"))
    # Only strings are searched.
    assert not matches({"body": {"n": "#1"}}, request(body={"n": 1}))


def test_matcho_enum() -> None:
    pattern = {"request-method": {"$enum": ["get", "post"]}}
    assert matches(pattern, request("get"))
    assert matches(pattern, request("post"))
    assert not matches(pattern, request("delete"))
    assert not matches({"body": {"n": {"$enum": [1, 2]}}}, request(body={"n": True}))


def test_matcho_arrays_match_element_wise_in_order() -> None:
    pattern = {"body": {"tags": ["a", "b"]}}
    assert matches(pattern, request(body={"tags": ["a", "b"]}))
    assert matches(pattern, request(body={"tags": ["a", "b", "c"]}))
    assert not matches(pattern, request(body={"tags": ["b", "a"]}))
    assert not matches(pattern, request(body={"tags": ["a"]}))
    assert not matches(pattern, request(body={"tags": "ab"}))
    # Each element is a pattern of its own.
    nested = {"body": {"coding": [{"system": "#loinc"}]}}
    assert matches(nested, request(body={"coding": [{"system": "http://loinc.org", "code": "1"}]}))
    assert not matches(nested, request(body={"coding": [{"system": "snomed"}, {"system": "loinc"}]}))


def test_matcho_contains_and_one_of() -> None:
    contains = {"body": {"coding": {"$contains": {"system": "loinc"}}}}
    assert matches(contains, request(body={"coding": [{"system": "snomed"}, {"system": "loinc"}]}))
    assert not matches(contains, request(body={"coding": [{"system": "snomed"}]}))
    assert not matches(contains, request(body={"coding": {"system": "loinc"}}))
    one_of = {"params": {"$one-of": [{"a": "present?"}, {"b": "present?"}]}}
    assert matches(one_of, request(params={"b": "1"}))
    assert not matches(one_of, request(params={"c": "1"}))


def test_matcho_present_nil_and_not_blank() -> None:
    assert matches({"user": "present?"}, request(user=ANN))
    assert not matches({"user": "present?"}, request())
    assert matches({"user": "nil?"}, request())
    assert not matches({"user": "nil?"}, request(user=ANN))
    assert matches({"params": {"q": "not-blank?"}}, request(params={"q": "x"}))
    assert not matches({"params": {"q": "not-blank?"}}, request(params={"q": "  "}))
    assert not matches({"params": {"q": "not-blank?"}}, request(params={}))


def test_matcho_dot_string_refers_to_the_request_and_needs_a_value() -> None:
    own = {"params": {"id": ".user.id"}}
    assert matches(own, request(uri="/User/ann", params={"id": "ann"}, user=ANN))
    assert not matches(own, request(uri="/User/bob", params={"id": "bob"}, user=ANN))
    # Anonymous and no id: null never equals null through a reference.
    assert not matches(own, request(params={}))


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"uri": "#(["}, "invalid regular expression"),
        ({"m": {"$enums": ["get"]}}, "unknown operator $enums"),
        ({"m": {"$enum": ["get"], "x": 1}}, "$enum must be the only key"),
        ({"m": {"$enum": "get"}}, "$enum takes an array"),
        ({"m": {"$enum": [{"a": 1}]}}, "$enum takes an array"),
        ({"m": {"$one-of": []}}, "$one-of takes a non-empty array"),
        ({"p": ".user..id"}, "invalid path"),
    ],
)
def test_invalid_matcho_patterns_are_refused(pattern: dict[str, Any], message: str) -> None:
    with pytest.raises(MatchoError, match=message.replace("$", r"\$")):
        compile_matcho(pattern)


# engines


def test_allow_engine() -> None:
    assert compile_rule({"engine": "allow"})(request())


def test_json_schema_engine_with_the_demo_policy() -> None:
    rule = compile_rule(DEMO_TWO_FACTOR)
    assert rule(request("post", "/app/auth/two-factor/request", user=ANN))
    assert rule(request("post", "/app/auth/two-factor/confirm", user=ANN))
    # No user: refused. The request object leaves `user` out rather than null.
    assert not rule(request("post", "/app/auth/two-factor/request"))
    assert not rule(request("get", "/User", user=ANN))
    # The demo's regex has no group: "starts with …/request" or "ends with …/confirm".
    assert rule(request("post", "/app/auth/two-factor/request/extra", user=ANN))
    assert rule(request("post", "/x/app/auth/two-factor/confirm", user=ANN))
    assert not rule(request("post", "/app/auth/two-factor/confirm/x", user=ANN))


def test_matcho_engine() -> None:
    rule = compile_rule({"engine": "matcho", "matcho": {"uri": "#^/User", "request-method": "get"}})
    assert rule(request("get", "/User/ann"))
    assert not rule(request("post", "/User"))


def test_complex_and_or_nesting() -> None:
    get_only = {"engine": "matcho", "matcho": {"request-method": "get"}}
    users = {"engine": "matcho", "matcho": {"uri": "#^/User"}}
    sessions = {"engine": "json-schema", "schema": {"properties": {"uri": {"pattern": "^/Session"}}}}
    rule = compile_rule(
        {"engine": "complex", "and": [get_only, {"engine": "complex", "or": [users, sessions]}]}
    )
    assert rule(request("get", "/User"))
    assert rule(request("get", "/Session/s1"))
    assert not rule(request("get", "/Client"))
    assert not rule(request("post", "/User"))
    both = compile_rule({"engine": "complex", "and": [get_only], "or": [users, sessions]})
    assert both(request("get", "/Session"))
    assert not both(request("delete", "/Session"))
    assert not both(request("get", "/Client"))
    only_or = compile_rule({"engine": "complex", "or": [{"engine": "allow"}, users]})
    assert only_or(request("delete", "/Client"))


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"engine": "sql", "sql": {"query": "select true"}}, "unknown engine 'sql'"),
        ({}, "unknown engine None"),
        ({"engine": "json-schema"}, "needs a `schema`"),
        ({"engine": "json-schema", "schema": {"type": "nonsense"}}, "invalid schema"),
        ({"engine": "json-schema", "schema": {"properties": {"uri": {"pattern": "(["}}}}, "invalid schema"),
        ({"engine": "matcho"}, "needs a `matcho` object"),
        ({"engine": "matcho", "matcho": {"uri": "#(["}}, "invalid matcho"),
        ({"engine": "complex"}, "needs `and` or `or`"),
        ({"engine": "complex", "and": "allow"}, "`and` must be an array"),
        ({"engine": "complex", "or": [{"engine": "allow"}, {"engine": "nope"}]}, "unknown engine 'nope'"),
    ],
)
def test_broken_policies_are_refused_by_the_compiler(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace("[", r"\[")):
        compile_rule(policy)


def test_a_broken_policy_denies_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    compiled = compile_policy({"id": "bad", "engine": "matcho", "matcho": {"uri": "#(["}})
    assert not compiled.allows(request())
    assert [r.getMessage() for r in caplog.records if r.name == "fhirauth.policy"] == [
        "AccessPolicy/bad is broken and denies: invalid matcho: "
        "invalid regular expression '([': unterminated character set at position 1"
    ]


def test_a_policy_failing_at_evaluation_denies_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    compiled = compile_policy(
        {"id": "remote", "engine": "json-schema", "schema": {"$ref": "https://example.invalid/schema"}}
    )
    assert not compiled.allows(request())
    (message,) = [r.getMessage() for r in caplog.records if r.name == "fhirauth.policy"]
    assert message.startswith("AccessPolicy/remote cannot be evaluated and denies: ")


# AccessControl over real storage


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def services(clock: ManualClock) -> AsyncIterator[Services]:
    storage = open_storage("sqlite://:memory:", clock)
    await storage.start(INDEXES)
    yield build_services(settings_for("sqlite://:memory:"), storage, clock)
    await storage.close()


async def policy(services: Services, id: str, **fields: Any) -> None:
    await services.resources.update("AccessPolicy", id, {"resourceType": "AccessPolicy", **fields})


async def allowed(services: Services, principal: Principal | None, req: dict[str, Any]) -> bool:
    try:
        await services.access.authorize(principal, req)
    except Forbidden:
        return False
    return True


async def test_root_is_allowed_without_any_policy(services: Services) -> None:
    root = Principal("root", client=services.clients.root_document())
    await services.access.authorize(root, request("delete", "/AccessPolicy/x"))


async def test_anonymous_is_401_with_a_challenge_and_a_known_caller_403(services: Services) -> None:
    with pytest.raises(NotAuthenticated) as anonymous:
        await services.access.authorize(None, request())
    assert anonymous.value.headers == {
        "WWW-Authenticate": 'Basic realm="fhirauth", charset="UTF-8", Bearer realm="fhirauth"'
    }
    with pytest.raises(Forbidden):
        await services.access.authorize(Principal("client", client=API), request())


async def test_linked_policies_apply_to_their_client_or_user_only(services: Services) -> None:
    await policy(services, "api-all", engine="allow", link=[{"resourceType": "Client", "id": "api"}])
    await policy(services, "ann-all", engine="allow", link=[{"resourceType": "User", "id": "ann"}])
    assert await allowed(services, Principal("client", client=API), request())
    assert not await allowed(services, Principal("client", client=OTHER), request())
    assert await allowed(services, Principal("user", client=WEB, user=ANN), request())
    bob = {"resourceType": "User", "id": "bob"}
    assert not await allowed(services, Principal("user", client=WEB, user=bob), request())
    # A user acting through a client gets that client's linked policies too.
    assert await allowed(services, Principal("user", client=API, user=bob), request())
    with pytest.raises(NotAuthenticated):
        await services.access.authorize(None, request())


async def test_global_policies_apply_to_everyone_including_anonymous(services: Services) -> None:
    await policy(services, "read-users", engine="matcho", matcho={"request-method": "get", "uri": "#^/User"})
    assert await allowed(services, Principal("client", client=API), request("get", "/User"))
    assert not await allowed(services, Principal("client", client=API), request("post", "/User"))
    await services.access.authorize(None, request("get", "/User/ann"))
    with pytest.raises(NotAuthenticated):
        await services.access.authorize(None, request("post", "/User"))


async def test_policies_are_or_ed(services: Services) -> None:
    await policy(services, "gets", engine="matcho", matcho={"request-method": "get"})
    await policy(services, "users", engine="matcho", matcho={"uri": "#^/User"})
    caller = Principal("client", client=API)
    assert await allowed(services, caller, request("get", "/Client"))
    assert await allowed(services, caller, request("post", "/User"))
    assert not await allowed(services, caller, request("post", "/Client"))


async def test_a_broken_policy_beside_a_good_one_does_not_break_access(services: Services) -> None:
    await policy(services, "bad", engine="matcho", matcho={"uri": "#(["})
    await policy(services, "good", engine="matcho", matcho={"uri": "#^/User"})
    caller = Principal("client", client=API)
    assert await allowed(services, caller, request("get", "/User"))
    assert not await allowed(services, caller, request("get", "/Client"))


async def test_a_change_here_applies_at_once(services: Services) -> None:
    caller = Principal("client", client=API)
    assert not await allowed(services, caller, request())
    await policy(services, "p", engine="allow")
    assert await allowed(services, caller, request())
    await services.resources.delete("AccessPolicy", "p")
    assert not await allowed(services, caller, request())


async def test_a_change_by_another_worker_applies_within_two_seconds(
    services: Services, clock: ManualClock
) -> None:
    caller = Principal("client", client=API)
    assert not await allowed(services, caller, request())
    # Another process over the same storage: its writes do not reach this process's hooks.
    other_worker = build_services(settings_for("sqlite://:memory:"), services.storage, clock)
    await other_worker.resources.create("AccessPolicy", {"resourceType": "AccessPolicy", "engine": "allow"})
    clock.advance(CACHE_SECONDS - 0.001)
    assert not await allowed(services, caller, request())
    clock.advance(0.001)
    assert await allowed(services, caller, request())


async def test_each_policy_version_is_compiled_once(
    services: Services, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_logs() -> list[str]:
        return [r.getMessage() for r in caplog.records if "is broken" in r.getMessage()]

    await policy(services, "bad", engine="matcho", matcho={"uri": "#(["})
    await services.access.authorize(Principal("root"), request())  # root never loads policies
    assert broken_logs() == []
    caller = Principal("client", client=API)
    for _ in range(3):
        assert not await allowed(services, caller, request())
        clock.advance(CACHE_SECONDS)
    assert len(broken_logs()) == 1
    await policy(services, "bad", engine="matcho", matcho={"uri": "#(("})
    assert not await allowed(services, caller, request())
    assert len(broken_logs()) == 2


async def test_policies_are_read_at_most_every_two_seconds(services: Services, clock: ManualClock) -> None:
    await policy(services, "p", engine="allow", link=[{"resourceType": "Client", "id": "api"}])
    first = await services.access.policies()
    assert await services.access.policies() is first
    clock.advance(CACHE_SECONDS)
    assert await services.access.policies() is not first


async def test_many_policies_are_all_read(services: Services) -> None:
    for n in range(520):
        await policy(services, f"p{n}", engine="allow", link=[{"resourceType": "Client", "id": f"c{n}"}])
    loaded = await services.access.policies()
    assert len(loaded.by_client) == 520
    last = {"resourceType": "Client", "id": "c519"}
    assert await allowed(services, Principal("client", client=last), request())


def test_policy_log_uses_its_own_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    compile_policy({"id": "x", "engine": "nope"})
    assert [r.name for r in caplog.records] == ["fhirauth.policy"]

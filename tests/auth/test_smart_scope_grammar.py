"""The SMART scope grammar (scopes-and-launch-context.md), v1 → v2, coverage, and plain words."""

from __future__ import annotations

import pytest

from fhirauth.auth.oauth_errors import InvalidScope
from fhirauth.auth.smart.scopes import ResourceScope, covered, describe, granted, is_smart, resource_scope


def scope(context: str, resource_type: str, permissions: str) -> ResourceScope:
    return ResourceScope(context, resource_type, frozenset(permissions))


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("patient/Observation.rs", scope("patient", "Observation", "rs")),
        ("user/*.cruds", scope("user", "*", "cruds")),
        ("system/*.rs", scope("system", "*", "rs")),
        ("patient/User.c", scope("patient", "User", "c")),
        ("user/User.ud", scope("user", "User", "ud")),
        # v1, mapped onto v2
        ("patient/Observation.read", scope("patient", "Observation", "rs")),
        ("user/User.write", scope("user", "User", "cud")),
        ("system/*.*", scope("system", "*", "cruds")),
    ],
)
def test_resource_scopes_parse(token: str, expected: ResourceScope) -> None:
    assert resource_scope(token) == expected


@pytest.mark.parametrize(
    "token", ["openid", "fhirUser", "launch", "launch/patient", "Patient/Observation.rs", "x"]
)
def test_other_scopes_are_not_resource_scopes(token: str) -> None:
    assert resource_scope(token) is None


@pytest.mark.parametrize(
    "token",
    [
        "patient/Observation.sr",
        "patient/Observation.",
        "patient/Observation.rr",
        "user/observation.rs",
        "system/.rs",
    ],
)
def test_malformed_resource_scopes_are_refused_never_reinterpreted(token: str) -> None:
    with pytest.raises(InvalidScope) as refused:
        resource_scope(token)
    assert refused.value.description.startswith(f"Malformed SMART scope '{token}'")


def test_search_parameter_constraints_are_refused() -> None:
    with pytest.raises(InvalidScope, match="search-parameter constraints are not supported"):
        resource_scope("patient/Observation.rs?category=a|b&code=c")


def test_coverage_is_by_context_type_and_permissions() -> None:
    listed = ["patient/*.rs", "user/User.cruds", "openid"]
    assert covered("patient/User.r", listed)
    assert covered("patient/Observation.read", listed)
    assert covered("user/User.write", listed)
    assert covered("openid", listed)
    assert not covered("patient/User.cruds", listed)
    assert not covered("user/Client.r", listed)
    assert not covered("system/User.r", listed)
    assert not covered("profile", listed)
    # a malformed entry in a Client's list grants nothing and breaks nothing
    assert not covered("patient/User.r", ["patient/User.sr"])


def test_granted_reads_strings_and_lists_and_ignores_malformed_stored_scopes() -> None:
    assert granted("openid patient/User.rs").restricts
    assert granted(["patient/User.rs"]).resources == (scope("patient", "User", "rs"),)
    assert not granted("openid launch/patient").restricts
    assert not granted("patient/User.sr").restricts
    assert not granted(None).restricts
    assert granted("patient/User.r user/*.rs").needs_patient()


def test_smart_requests_are_recognised_by_their_scopes() -> None:
    assert all(is_smart(token) for token in ("launch", "launch/patient", "launch/encounter", "user/*.rs"))
    assert not any(is_smart(token) for token in ("openid", "fhirUser", "profile", "offline_access"))


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("patient/User.rs", "Read and search the selected patient's User records"),
        ("patient/*.read", "Read and search all the selected patient's records"),
        ("user/User.cruds", "Create, read, change, delete and search the User records you may reach"),
        ("user/*.c", "Create all the records you may reach"),
        ("system/Client.rs", "Read and search the Client records this app may reach"),
        ("launch/patient", "Know which patient you chose"),
        ("custom-scope", None),
    ],
)
def test_each_scope_in_plain_words(token: str, words: str | None) -> None:
    assert describe(token) == words

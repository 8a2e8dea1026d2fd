"""The OAuth endpoints' form bodies are read as `urllib.parse.parse_qsl(keep_blank_values=True,
max_num_fields=64)` reads them (fhirauth/http/oauth.py reads them faster, so it is held to that):
the same pairs for every body, and the same refusal where parse_qsl raises."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fhirauth.auth.oauth_errors import InvalidRequest
from fhirauth.http.oauth import _form_pairs

# Characters a form body is made of, with the ones that mean something to the parser over-weighted.
_PIECES = st.one_of(
    st.sampled_from(["&", "=", "+", "%", "%2", "%zz", "%41", "%C3%A9", "%C3", "%E2%82", "%00", "&&", "=="]),
    st.text(max_size=6),
)


def _reference(text: str) -> list[tuple[str, str]] | None:
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        return None


def _ours(text: str) -> list[tuple[str, str]] | None:
    try:
        return _form_pairs(text.encode("utf-8"))
    except InvalidRequest:
        return None


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(st.lists(_PIECES, max_size=40).map("".join))
@example("grant_type=client_credentials")
@example(
    "scope=system%2FUser.rs&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
)
@example("a+b=c+d&=&x&&y=")
@example("&".join(["a=1"] * 64))
@example("&".join(["a=1"] * 65))
@example("&" * 64)
@example("name=%C3%A9t%C3%A9+%E2%82%AC&bad=%ff%fe")
def test_form_pairs_are_parse_qsls(body: str) -> None:
    assert _ours(body) == _reference(body)


@pytest.mark.parametrize("value", ["é", "€ x", "a+b", "100%", "%", "=&"])
def test_a_quoted_value_comes_back_as_it_was(value: str) -> None:
    assert _form_pairs(f"v={quote(value, safe='')}".encode()) == [("v", value)]


def test_a_body_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(InvalidRequest, match="Malformed form body"):
        _form_pairs(b"a=\xff")

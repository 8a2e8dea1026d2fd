from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from fhirauth.twofactor.uri import provisioning_uri

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_simple_uri() -> None:
    assert provisioning_uri(SECRET, "alice@example.org", "fhirauth") == (
        "otpauth://totp/fhirauth:alice%40example.org?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=fhirauth"
    )


def test_reserved_characters_are_percent_encoded() -> None:
    uri = provisioning_uri(SECRET, "alice+x@example.org", "ACME Co & Sons")
    assert uri == (
        "otpauth://totp/ACME%20Co%20%26%20Sons:alice%2Bx%40example.org"
        "?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=ACME%20Co%20%26%20Sons"
    )
    parsed = pyotp.parse_uri(uri)
    assert (parsed.issuer, parsed.name, parsed.secret) == ("ACME Co & Sons", "alice+x@example.org", SECRET)


@pytest.mark.parametrize(
    ("account", "issuer"),
    [
        ("bob:admin", "Clinic: North"),
        ("jürgen@beispiel.de", "Zürich Spital"),
        ("a?b=c&d", "x/y#z"),
        ("名前", "発行者 100%"),
    ],
)
def test_round_trip_through_pyotp(account: str, issuer: str) -> None:
    uri = provisioning_uri(SECRET, account, issuer)
    assert uri.isascii()
    assert " " not in uri and "+" not in uri
    label = urlsplit(uri).path.removeprefix("/")
    # The issuer separator is the only literal colon in the label.
    assert label.count(":") == 1
    parsed = pyotp.parse_uri(uri)
    assert (parsed.issuer, parsed.name, parsed.secret) == (issuer, account, SECRET)


def test_defaults_are_not_spelled_out() -> None:
    query = parse_qs(urlsplit(provisioning_uri(SECRET, "a", "b")).query)
    assert set(query) == {"secret", "issuer"}


@pytest.mark.parametrize(("account", "issuer"), [("", "fhirauth"), ("alice", "")])
def test_empty_names_are_refused(account: str, issuer: str) -> None:
    with pytest.raises(ValueError):
        provisioning_uri(SECRET, account, issuer)

"""The jwks_uri fetcher's rules that need no server: which addresses count as inside the network,
how long a set is cached, and what a JWK Set must look like."""

from __future__ import annotations

import pytest
from joserfc.jwk import RSAKey

from fhirauth.auth.jwks_fetch import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    JwksFetcher,
    JwksUnavailable,
    cache_seconds,
    import_key_set,
)
from fhirauth.clock import ManualClock

INNER = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::",
]


@pytest.mark.parametrize("address", INNER)
async def test_a_host_resolving_to_an_inner_address_is_refused(address: str) -> None:
    fetcher = JwksFetcher(ManualClock())
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(JwksUnavailable, match="not a public address"):
        await fetcher.keys(f"https://{host}/jwks.json")
    await fetcher.close()


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.org/jwks.json",
        "ftp://example.org/jwks",
        "https://user:pw@example.org/jwks",
        "https:///x",
    ],
)
async def test_only_plain_https_urls_are_fetched(uri: str) -> None:
    fetcher = JwksFetcher(ManualClock())
    with pytest.raises(JwksUnavailable, match="https URL|name a host"):
        await fetcher.keys(uri)
    await fetcher.close()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, DEFAULT_TTL_SECONDS),
        ("public", DEFAULT_TTL_SECONDS),
        ("max-age=600", 600),
        ('public, max-age="120"', 120),
        ("max-age=5", MIN_TTL_SECONDS),
        ("max-age=86400", MAX_TTL_SECONDS),
        ("no-store", MIN_TTL_SECONDS),
        ("no-cache, max-age=900", MIN_TTL_SECONDS),
        ("s-maxage=900", DEFAULT_TTL_SECONDS),
    ],
)
def test_cache_lifetime_follows_cache_control_within_bounds(header: str | None, seconds: int) -> None:
    assert cache_seconds(header) == seconds


def test_a_key_set_holds_public_keys_only() -> None:
    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "k"})
    assert [k.kid for k in import_key_set({"keys": [key.as_dict(private=False)]}).keys] == ["k"]
    for bad in (
        {"keys": [key.as_dict(private=True)]},
        {"keys": "k"},
        [],
        {"keys": [1]},
        {"keys": [{"kty": "??"}]},
    ):
        with pytest.raises(JwksUnavailable):
            import_key_set(bad)

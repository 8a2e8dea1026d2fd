from __future__ import annotations

import math
import re

import pytest

from fhirauth.twofactor.recovery import ALPHABET, RecoveryCodes

PEPPER = b"recovery-pepper-for-tests-0123456789"
codes_box = RecoveryCodes(PEPPER)


def test_ten_distinct_codes_in_two_groups() -> None:
    codes = codes_box.generate()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(re.fullmatch(r"[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}", code) for code in codes)


def test_each_code_carries_at_least_50_bits() -> None:
    assert len(set(ALPHABET)) == 32
    assert not set("ilou") & set(ALPHABET)
    assert 10 * math.log2(len(ALPHABET)) >= 50


def test_codes_differ_between_batches() -> None:
    assert set(codes_box.generate(50)).isdisjoint(codes_box.generate(50))


def test_normalise() -> None:
    assert codes_box.normalise(" K7MQX-4TRWP ") == "k7mqx4trwp"
    assert codes_box.normalise("k7mqx 4trwp") == "k7mqx4trwp"
    assert codes_box.normalise("k7mqx--\t4trwp\n") == "k7mqx4trwp"
    # Look-alikes read as the digits they resemble.
    assert codes_box.normalise("OIL00-11abc") == "01100" + "11abc"


def test_find_accepts_typed_variants() -> None:
    codes = codes_box.generate()
    digests = [codes_box.digest(code) for code in codes]
    assert codes_box.find(codes[4], digests) == 4
    assert codes_box.find(codes[4].upper().replace("-", " "), digests) == 4
    typed = codes[7].replace("0", "o").replace("1", "l")
    assert codes_box.find(typed, digests) == 7


@pytest.mark.parametrize("typed", ["", "k7mqx", "k7mqx-4trwp-x", "k7mqx-4trwu", "k7mqx-4trw!"])
def test_find_refuses_malformed_and_unknown(typed: str) -> None:
    digests = [codes_box.digest(code) for code in codes_box.generate()]
    assert codes_box.find(typed, digests) is None


def test_find_after_a_code_is_spent() -> None:
    codes = codes_box.generate()
    digests = [codes_box.digest(code) for code in codes]
    del digests[2]
    assert codes_box.find(codes[2], digests) is None
    assert codes_box.find(codes[3], digests) == 2


def test_digest_is_keyed_by_the_pepper() -> None:
    code = "k7mqx-4trwp"
    other = RecoveryCodes(b"another-pepper-0123456789abcdef")
    assert codes_box.digest(code) == codes_box.digest("K7MQX4TRWP")
    assert re.fullmatch(r"[0-9a-f]{64}", codes_box.digest(code))
    assert codes_box.digest(code) != other.digest(code)
    assert other.find(code, [codes_box.digest(code)]) is None


def test_short_pepper_is_refused() -> None:
    with pytest.raises(ValueError):
        RecoveryCodes(b"short")

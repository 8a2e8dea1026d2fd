from __future__ import annotations

import base64

import pytest

from fhirauth.secretbox import SecretBox, SecretBoxError, is_encrypted

OLD = "old-master-secret-0123456789"
NEW = "new-master-secret-9876543210"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_round_trip() -> None:
    box = SecretBox([NEW])
    sealed = box.encrypt(TOTP_SECRET, aad="user-1")
    assert sealed.isascii()
    assert sealed.startswith(f"fa1:{box.primary_kid}:")
    assert TOTP_SECRET not in sealed
    assert is_encrypted(sealed)
    assert box.is_encrypted(sealed)
    assert box.decrypt(sealed, aad="user-1") == TOTP_SECRET


def test_each_seal_uses_a_fresh_nonce() -> None:
    box = SecretBox([NEW])
    assert box.encrypt(TOTP_SECRET, aad="user-1") != box.encrypt(TOTP_SECRET, aad="user-1")


def test_plain_values_are_not_encrypted() -> None:
    assert not is_encrypted(TOTP_SECRET)
    assert not is_encrypted("")
    assert not is_encrypted("fa1:short:AAAA")


def test_another_users_associated_data_fails() -> None:
    box = SecretBox([NEW])
    sealed = box.encrypt(TOTP_SECRET, aad="user-1")
    with pytest.raises(SecretBoxError):
        box.decrypt(sealed, aad="user-2")


def test_tampering_fails() -> None:
    box = SecretBox([NEW])
    sealed = box.encrypt(TOTP_SECRET, aad="user-1")
    prefix, kid, payload = sealed.split(":")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for position in (0, 12, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        tampered = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(SecretBoxError):
            box.decrypt(f"{prefix}:{kid}:{tampered}", aad="user-1")
    with pytest.raises(SecretBoxError):
        box.decrypt(f"{prefix}:{kid}:{payload[:-4]}", aad="user-1")
    with pytest.raises(SecretBoxError):
        box.decrypt(TOTP_SECRET, aad="user-1")


def test_values_not_in_the_sealed_form_fail() -> None:
    box = SecretBox([NEW])
    prefix, kid, payload = box.encrypt(TOTP_SECRET, aad="user-1").split(":")
    assert box.decrypt(f"{prefix}:{kid}:{payload}", aad="user-1") == TOTP_SECRET
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    # Sealed again until the standard alphabet writes these bytes differently.
    while "+" not in (standard := base64.standard_b64encode(raw).decode()) and "/" not in standard:
        prefix, kid, payload = box.encrypt(TOTP_SECRET, aad="user-1").split(":")
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    not_sealed = [
        f"{prefix}:{kid}:{payload}:{payload}",
        f"{kid}:{payload}",
        f"fa2:{kid}:{payload}",
        # Base64 decoders skip characters outside the alphabet by default; this one must not.
        f"{prefix}:{kid}:{payload[:8]}$.{payload[8:]}",
        f"{prefix}:{kid}:{payload[:8]}é{payload[9:]}",
        # The same bytes in other Base64 dialects: the standard alphabet, padding written out.
        f"{prefix}:{kid}:{standard}",
        f"{prefix}:{kid}:{payload}=",
        f"{prefix}:{kid}:{payload}==",
        f"{prefix}:{kid}:",
    ]
    for value in not_sealed:
        with pytest.raises(SecretBoxError):
            box.decrypt(value, aad="user-1")


def test_unknown_key_id_fails() -> None:
    sealed = SecretBox([OLD]).encrypt(TOTP_SECRET, aad="user-1")
    with pytest.raises(SecretBoxError, match="key id"):
        SecretBox([NEW]).decrypt(sealed, aad="user-1")


def test_rotation() -> None:
    old_box = SecretBox([OLD])
    sealed_old = old_box.encrypt(TOTP_SECRET, aad="user-1")
    both = SecretBox([NEW, OLD])
    assert both.primary_kid == SecretBox([NEW]).primary_kid != old_box.primary_kid
    assert both.decrypt(sealed_old, aad="user-1") == TOTP_SECRET
    assert both.needs_rotation(sealed_old)
    sealed_new = both.rotate(sealed_old, aad="user-1")
    assert sealed_new.startswith(f"fa1:{both.primary_kid}:")
    assert not both.needs_rotation(sealed_new)
    assert SecretBox([NEW]).decrypt(sealed_new, aad="user-1") == TOTP_SECRET
    with pytest.raises(SecretBoxError):
        old_box.decrypt(sealed_new, aad="user-1")


def test_derived_keys_are_per_purpose_and_per_master_secret() -> None:
    box = SecretBox([NEW, OLD])
    pepper = box.derive_key("recovery-codes")
    assert len(pepper) == 32
    assert pepper == SecretBox([NEW]).derive_key("recovery-codes")
    assert pepper != box.derive_key("cookies")
    assert pepper != SecretBox([OLD]).derive_key("recovery-codes")
    assert len(box.derive_key("cookies", 64)) == 64


@pytest.mark.parametrize("master_secrets", [[], ["too-short"]])
def test_weak_configuration_is_refused(master_secrets: list[str]) -> None:
    with pytest.raises(ValueError):
        SecretBox(master_secrets)

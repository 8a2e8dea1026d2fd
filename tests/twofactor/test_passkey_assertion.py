"""The assertion check of the passkey sign-in (fhirauth/twofactor/passkeys/assertion.py) against
py_webauthn's verify_authentication_response, case by case: each response, re-signed so that only the
case's own flaw is wrong, is accepted by both or refused by both."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from support.webauthn_key import SoftKey, b64url, unb64url
from webauthn import verify_authentication_response
from webauthn.helpers.exceptions import WebAuthnException

from fhirauth.twofactor.passkeys.assertion import AssertionRefused, verify_assertion

ORIGIN = "https://auth.example.org"
RP_ID = "auth.example.org"
CHALLENGE = b64url(b"c" * 32)
Case = Callable[[SoftKey, dict[str, Any]], None]


def registered() -> tuple[SoftKey, str]:
    key = SoftKey(ORIGIN)
    created = key.create({"rp": {"id": RP_ID}, "user": {"id": b64url(b"u" * 32)}, "challenge": CHALLENGE})
    attestation = unb64url(created["response"]["attestationObject"])
    auth_data = cbor2.loads(attestation)["authData"]
    id_length = int.from_bytes(auth_data[53:55], "big")
    return key, b64url(auth_data[55 + id_length :])


def sign(key: SoftKey, credential: dict[str, Any], auth_data: bytes, client_data: bytes) -> None:
    response = credential["response"]
    response["authenticatorData"] = b64url(auth_data)
    response["clientDataJSON"] = b64url(client_data)
    signature = key.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
    response["signature"] = b64url(signature)


def parts(credential: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    response = credential["response"]
    return unb64url(response["authenticatorData"]), json.loads(unb64url(response["clientDataJSON"]))


def flags(change: Callable[[int], int]) -> Case:
    def apply(key: SoftKey, credential: dict[str, Any]) -> None:
        auth_data, client_data = parts(credential)
        changed = auth_data[:32] + bytes([change(auth_data[32])]) + auth_data[33:]
        sign(key, credential, changed, json.dumps(client_data).encode())

    return apply


def client_data(**fields: object) -> Case:
    def apply(key: SoftKey, credential: dict[str, Any]) -> None:
        auth_data, data = parts(credential)
        sign(key, credential, auth_data, json.dumps({**data, **fields}).encode())

    return apply


def authenticator_data(change: Callable[[bytes], bytes]) -> Case:
    def apply(key: SoftKey, credential: dict[str, Any]) -> None:
        auth_data, data = parts(credential)
        sign(key, credential, change(auth_data), json.dumps(data).encode())

    return apply


def field(path: tuple[str, ...], value: object) -> Case:
    def apply(key: SoftKey, credential: dict[str, Any]) -> None:
        target = credential
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value

    return apply


def bad_signature(key: SoftKey, credential: dict[str, Any]) -> None:
    signature = bytearray(unb64url(credential["response"]["signature"]))
    signature[-1] ^= 1
    credential["response"]["signature"] = b64url(bytes(signature))


CASES: dict[str, tuple[Case | None, bool, bool]] = {
    # name: (flaw, user verification required, accepted)
    "good": (None, False, True),
    "good, user verified, required": (None, True, True),
    "user not verified, required": (flags(lambda f: f & ~0x04), True, False),
    "user not verified, preferred": (flags(lambda f: f & ~0x04), False, True),
    "user not present": (flags(lambda f: f & ~0x01), False, False),
    "backed up, not backup-eligible": (flags(lambda f: f | 0x10), False, False),
    "backed up and backup-eligible": (flags(lambda f: f | 0x18), False, True),
    "attested credential data flagged": (flags(lambda f: f | 0x40), False, False),
    "another origin": (client_data(origin="https://evil.example.org"), False, False),
    "a registration's client data": (client_data(type="webauthn.create"), False, False),
    "token binding status unknown": (client_data(tokenBinding={"status": "bogus"}), False, False),
    "token binding present": (client_data(tokenBinding={"status": "present", "id": "x"}), False, True),
    "another rpId": (
        authenticator_data(lambda a: hashlib.sha256(b"evil.org").digest() + a[32:]),
        False,
        False,
    ),
    "too short": (authenticator_data(lambda a: a[:36]), False, False),
    "trailing bytes without extensions": (authenticator_data(lambda a: a + b"\x00"), False, False),
    "a flipped signature bit": (bad_signature, False, False),
    "id is not rawId": (field(("id",), b64url(b"other")), False, False),
    "type is not public-key": (field(("type",), "password"), False, False),
    "no signature": (field(("response", "signature"), ""), False, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_check_agrees_with_py_webauthn(name: str) -> None:
    flaw, require_uv, accepted = CASES[name]
    key, public_key = registered()
    credential = key.get({"challenge": CHALLENGE}, sign_count=7)
    if flaw is not None:
        flaw(key, credential)
    raw_id = unb64url(credential["rawId"])

    def ours() -> object:
        return verify_assertion(
            credential,
            raw_id,
            rp_id_hash=hashlib.sha256(RP_ID.encode()).digest(),
            origins=(ORIGIN,),
            public_key=public_key,
            require_user_verification=require_uv,
        )

    def library() -> object:
        return verify_authentication_response(
            credential=credential,
            expected_challenge=unb64url(CHALLENGE),
            expected_rp_id=RP_ID,
            expected_origin=[ORIGIN],
            credential_public_key=unb64url(public_key),
            credential_current_sign_count=0,
            require_user_verification=require_uv,
        )

    if accepted:
        verified = ours()
        theirs = library()
        assert (verified.sign_count, verified.user_verified, verified.backed_up) == (  # type: ignore[attr-defined]
            theirs.new_sign_count,  # type: ignore[attr-defined]
            theirs.user_verified,  # type: ignore[attr-defined]
            theirs.credential_backed_up,  # type: ignore[attr-defined]
        )
    else:
        with pytest.raises(AssertionRefused):
            ours()
        with pytest.raises((WebAuthnException, ValueError, KeyError, TypeError)):
            library()

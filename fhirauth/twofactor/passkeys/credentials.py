"""Stored passkeys: WebAuthnCredential resources whose id is the SHA-256 (hex) of the credential id,
so a sign-in reads the one it names. What the pages show of one, its amr method, and the counter rule."""

from __future__ import annotations

import hashlib

from webauthn.helpers.structs import AuthenticatorTransport, PublicKeyCredentialDescriptor

from fhirauth.auth.oidc.amr import HWK, SWK
from fhirauth.errors import BadRequest
from fhirauth.twofactor.passkeys.responses import Document, unb64url

RESOURCE = "WebAuthnCredential"
MAX_NAME_CHARS = 64
MAX_PASSKEYS = 20
TRANSPORTS = frozenset(transport.value for transport in AuthenticatorTransport)


def passkey_method(credential: Document) -> str:
    """RFC 8176: a synced passkey's private key leaves the device (`swk`); a device-bound one's
    does not (`hwk`)."""
    return SWK if credential.get("backupEligible") is True else HWK


def passkey_id(raw_credential_id: bytes) -> str:
    return hashlib.sha256(raw_credential_id).hexdigest()


def check_name(name: object) -> str:
    """A passkey's label: 1 to 64 characters, no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("Give the passkey a name", "name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS or any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in name):
        raise BadRequest(
            f"A passkey name has at most {MAX_NAME_CHARS} characters, none of them control characters", "name"
        )
    return name


def visible(credential: Document) -> Document:
    """What the settings page and the JSON list show of a credential."""
    return {
        "id": credential["id"],
        "name": credential.get("name"),
        "created": credential.get("created"),
        "lastUsed": credential.get("lastUsed"),
        "transports": credential.get("transports", []),
        "synced": credential.get("backupEligible") is True,
    }


def counter_refused(stored: int, new: int) -> bool:
    """WebAuthn L3 §6.1.1: a counter that does not grow, when the authenticator keeps one, is a
    sign that the credential was copied. The one home of the counter rule."""
    return (new > 0 or stored > 0) and new <= stored


def descriptor(credential: Document) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in credential.get("transports", []) if t in TRANSPORTS]
    return PublicKeyCredentialDescriptor(
        id=unb64url(credential["credentialId"]), transports=transports or None
    )

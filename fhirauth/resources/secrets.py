"""The secret-field rule, in one place: what is hashed, what is encrypted, what never leaves the server,
and what only the server's own flows and the administrator change."""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass
from typing import Any

from fhirauth.auth.passwords import PasswordHasher
from fhirauth.errors import BadRequest, Forbidden, Invalid
from fhirauth.secretbox import SecretBox, SecretBoxError

Document = dict[str, Any]

HASHED = {"User": ("password",), "Client": ("secret",)}
ENCRYPTED = {"User": ("twoFactor.secretKey",)}
# Server-managed values: stored as written by the server (digests, token hashes), never returned.
HIDDEN = {
    # pending: which sign-in a pending TOTP secret belongs to, and until when.
    "User": ("twoFactor.recoveryCodes", "twoFactor.pending"),
    "Session": ("access_token", "refresh_token", "authorization_code", "code_challenge"),
    "Registration": ("token",),
    # An SMTP provider's password must be readable to log in to the server, but no caller needs it back.
    "AidboxConfig": ("provider.*.password",),
    # Webhook headers usually carry the gateway's credentials.
    "AuthConfig": ("twoFactor.webhook.headers",),
}


def _secret_paths(resource_type: str) -> tuple[str, ...]:
    return HASHED.get(resource_type, ()) + ENCRYPTED.get(resource_type, ()) + HIDDEN.get(resource_type, ())


_SECRET_ROOTS = {
    resource_type: frozenset(path.split(".")[0] for path in _secret_paths(resource_type))
    for resource_type in {*HASHED, *ENCRYPTED, *HIDDEN}
}


def _concrete(doc: Document | None, path: str) -> list[str]:
    """The dotted paths in `doc` that `path` names; `*` stands for any key of an object."""
    if "*" not in path:
        return [path]
    found: list[str] = []
    prefix, _, rest = path.partition("*")
    node = _get(doc, prefix.rstrip(".")) if doc is not None else None
    if isinstance(node, dict):
        for key in node:
            found.extend(_concrete(doc, f"{prefix}{key}{rest}"))
    return found


def _get(doc: Document, path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(doc: Document, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            return
        node = child
    node[last] = value


class SecretFields:
    def __init__(self, passwords: PasswordHasher, box: SecretBox) -> None:
        self._passwords = passwords
        self._box = box

    async def protect(self, doc: Document, previous: Document | None) -> Document:
        """Hash and encrypt the secret fields of a document about to be stored.

        A secret field left out of a full update keeps its stored value: clients never see it, so a
        read-modify-write must not wipe it.
        """
        resource_type = doc["resourceType"]
        for path in HASHED.get(resource_type, ()):
            value = _get(doc, path)
            if value is None:
                self._keep(doc, previous, path)
            elif not self._passwords.is_hash(value):
                _set(doc, path, await self._passwords.hash_async(value))
        for path in ENCRYPTED.get(resource_type, ()):
            value = _get(doc, path)
            if value is None:
                self._keep(doc, previous, path)
            elif not self._box.is_encrypted(value):
                _set(doc, path, self._box.encrypt(_normalise_base32(value), aad=doc["id"]))
            elif not self._readable(value, doc["id"]):
                raise Invalid(f"{path} is encrypted for another user or another master secret", path)
        if previous is not None:
            for pattern in HIDDEN.get(resource_type, ()):
                for path in _concrete(previous, pattern):
                    if _get(doc, path) is None:
                        self._keep(doc, previous, path)
        return doc

    @staticmethod
    def _keep(doc: Document, previous: Document | None, path: str) -> None:
        if previous is None:
            return
        old = _get(previous, path)
        if old is not None:
            _set(doc, path, old)

    def _readable(self, value: str, aad: str) -> bool:
        try:
            self._box.decrypt(value, aad=aad)
        except SecretBoxError:
            return False
        return True

    @staticmethod
    def sealed_fields(doc: Document) -> dict[str, str]:
        """The encrypted fields `doc` holds, by path."""
        found = {path: _get(doc, path) for path in ENCRYPTED.get(doc["resourceType"], ())}
        return {path: value for path, value in found.items() if isinstance(value, str)}

    def unreadable_fields(self, doc: Document) -> list[str]:
        """The encrypted fields of `doc` that no configured master secret opens."""
        return [
            path for path, value in self.sealed_fields(doc).items() if not self._readable(value, doc["id"])
        ]

    def reseal(self, doc: Document) -> Document | None:
        """`doc` with its encrypted fields re-sealed under the first master secret, or None when every
        one already is. Raises SecretBoxError for a value no configured master secret opens."""
        resealed: Document | None = None
        for path, value in self.sealed_fields(doc).items():
            if self._box.needs_rotation(value):
                resealed = resealed or copy.deepcopy(doc)
                _set(resealed, path, self._box.rotate(value, aad=doc["id"]))
        return resealed

    def reveal_totp_secret(self, user: Document) -> str | None:
        value = _get(user, "twoFactor.secretKey")
        if value is None:
            return None
        return self._box.decrypt(value, aad=user["id"])

    def seal_totp_secret(self, user_id: str, secret_b32: str) -> str:
        return self._box.encrypt(secret_b32, aad=user_id)


def redact(doc: Document) -> Document:
    """The document as any caller may see it: secret fields removed.

    `doc` itself is never changed. The result shares every part that holds no secret with it (as
    it is `doc` itself when there is nothing to remove): callers read it or copy it, never change it.
    """
    # Most documents hold no secret at all (a User without a password); one look at the top level says so.
    if not any(key in doc for key in _SECRET_ROOTS.get(doc.get("resourceType", ""), ())):
        return doc
    paths = [p for pattern in _secret_paths(doc.get("resourceType", "")) for p in _concrete(doc, pattern)]
    if not any(_get(doc, path) is not None for path in paths):
        return doc
    visible = dict(doc)
    # Only the objects on the way to a secret are copied, each once.
    copies = {id(visible)}
    for path in paths:
        *parents, last = path.split(".")
        node = visible
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            if id(child) not in copies:
                child = node[part] = dict(child)
                copies.add(id(child))
            node = child
        else:
            node.pop(last, None)
    return visible


def refuse_secret_path(resource_type: str, path: str) -> None:
    """Search and sort never reach secret fields: their values would leak through the results."""
    asked = path.split(".")
    for secret in _secret_paths(resource_type):
        hidden = secret.split(".")
        common = min(len(asked), len(hidden))
        if all(h in ("*", a) for a, h in zip(asked[:common], hidden[:common], strict=True)):
            raise BadRequest(f"Search on '{path}' is not allowed", path)


def _normalise_base32(value: str) -> str:
    secret = value.replace(" ", "").upper().rstrip("=")
    try:
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    except binascii.Error:
        raise Invalid("twoFactor.secretKey must be Base32", "User.twoFactor.secretKey") from None
    if len(key) < 10:
        raise Invalid("twoFactor.secretKey must hold at least 80 bits", "User.twoFactor.secretKey")
    return secret


_ABSENT = object()


@dataclass(frozen=True)
class Managed:
    """A field only the administrator changes, and the server's own flows if it has any (they write
    through ResourceService.save)."""

    # Why any other write of it is refused, after its name.
    refusal: str
    # What a caller may write where nothing is stored, as it says the same as leaving the field out
    # (_ABSENT: no value does).
    unset: Any = _ABSENT


MANAGED = {
    "User": {
        "twoFactor": Managed(
            "is managed by the two-factor flows: only they and an administrator change it", {"enabled": False}
        ),
        # It puts the user in a patient's compartment for SMART's patient/ scopes.
        "fhirUser": Managed("is set by an administrator only: it names the FHIR record the user stands for"),
    }
}


# Types only the server's own flows and the administrator write at all, by why.
MANAGED_TYPES = {
    "WebAuthnCredential": "is written by the passkey ceremonies: only they and an administrator change it",
}


def refuse_managed_type(resource_type: str) -> None:
    """403 for a write of a server-managed type by a caller who is not the administrator."""
    refusal = MANAGED_TYPES.get(resource_type)
    if refusal is not None:
        raise Forbidden(f"{resource_type} {refusal}", resource_type)


def keep_managed(resource_type: str, written: Document, stored: Document | None) -> Document:
    """`written`, a whole document from a caller who is not the administrator, with the server-managed
    fields of `stored` (the live version, or the tombstone a create is made over; None when there is
    none). A field left out is kept; one sent back as the caller sees it is kept; any other value is
    refused (403), so a caller learns that its write would not take."""
    return _keep_managed(resource_type, written, stored, left_out_keeps=True)


def keep_managed_in_patch(resource_type: str, patched: Document, stored: Document) -> Document:
    """`keep_managed` for a patch's result: it started from what the caller sees, so a managed field
    it lacks was removed, and that is a change."""
    return _keep_managed(resource_type, patched, stored, left_out_keeps=False)


def _keep_managed(
    resource_type: str, written: Document, stored: Document | None, *, left_out_keeps: bool
) -> Document:
    refuse_managed_type(resource_type)
    fields = MANAGED.get(resource_type)
    if fields is None:
        return written
    kept = dict(written)
    for name, managed in fields.items():
        sent = written.get(name, _ABSENT)
        held = stored.get(name, _ABSENT) if stored is not None else _ABSENT
        if sent is _ABSENT and left_out_keeps:
            unchanged = True
        elif held is _ABSENT and sent is not _ABSENT and sent == managed.unset:
            kept[name] = copy.deepcopy(managed.unset)
            continue
        else:
            # Compared with what the caller can see of it (redacted only when that is asked).
            shown = redact(stored) if stored is not None and held is not _ABSENT else {}
            unchanged = sent == shown.get(name, _ABSENT)
        if not unchanged:
            raise _managed_refusal(resource_type, name, managed)
        kept.pop(name, None)
        if held is not _ABSENT:
            # A copy of the object whose fields protect() may set: they must not reach the stored one.
            kept[name] = dict(held) if isinstance(held, dict) else held
    return kept


def _managed_refusal(resource_type: str, name: str, managed: Managed) -> Forbidden:
    return Forbidden(f"{resource_type}.{name} {managed.refusal}", f"{resource_type}.{name}")

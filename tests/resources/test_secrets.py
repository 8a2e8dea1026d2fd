"""redact: what any caller may see of a stored document."""

from __future__ import annotations

import copy
from typing import Any

from fhirauth.resources.secrets import redact


def test_a_document_without_secrets_is_returned_as_it_is() -> None:
    user = {"resourceType": "User", "id": "u", "email": "u@example.org", "twoFactor": {"enabled": False}}
    assert redact(user) is user
    assert redact({"resourceType": "Grant", "id": "g", "password": "not a secret of a Grant"})["password"]


def test_every_secret_is_removed_and_the_stored_document_is_left_alone() -> None:
    user: dict[str, Any] = {
        "resourceType": "User",
        "id": "u",
        "password": "$argon2id$hash",
        "name": {"givenName": "U"},
        "twoFactor": {"enabled": True, "secretKey": "sealed", "recoveryCodes": ["a", "b"], "transport": "x"},
    }
    stored = copy.deepcopy(user)
    assert redact(user) == {
        "resourceType": "User",
        "id": "u",
        "name": {"givenName": "U"},
        "twoFactor": {"enabled": True, "transport": "x"},
    }
    assert user == stored


def test_secrets_under_any_key_of_a_wildcard_are_removed() -> None:
    config = {
        "resourceType": "AidboxConfig",
        "id": "c",
        "provider": {"smtp": {"host": "h", "password": "p"}, "other": {"password": "q"}, "plain": "v"},
    }
    stored = copy.deepcopy(config)
    assert redact(config)["provider"] == {"smtp": {"host": "h"}, "other": {}, "plain": "v"}
    assert config == stored

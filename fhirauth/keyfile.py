"""The master secret: from settings, or generated once and kept in a file beside the database."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from fhirauth.settings import DEVELOPMENT_ROOT_SECRET, Settings

log = logging.getLogger("fhirauth")


def _default_key_path(storage_url: str) -> Path | None:
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///") + ".key")
    if storage_url.startswith("sqlite://"):
        return None  # in memory: the key lives as long as the data
    return Path("fhirauth.key")


def master_secrets(settings: Settings) -> list[str]:
    """The master secrets, newest first: the first encrypts, all of them decrypt."""
    previous = [s.get_secret_value() for s in settings.previous_secret_keys]
    if settings.secret_key is not None:
        return [settings.secret_key.get_secret_value(), *previous]
    path = Path(settings.secret_key_file) if settings.secret_key_file else _default_key_path(settings.storage)
    if path is None:
        log.warning("FHIRAUTH_SECRET_KEY is not set: using a throw-away key for this in-memory store")
        return [secrets.token_urlsafe(32), *previous]
    if path.exists():
        return [path.read_text().strip(), *previous]
    if settings.env == "production":
        raise SystemExit("FHIRAUTH_SECRET_KEY must be set in production")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    log.warning(
        "FHIRAUTH_SECRET_KEY is not set: generated a master secret in %s. Back it up: without it the "
        "stored TOTP secrets cannot be decrypted. Set FHIRAUTH_SECRET_KEY in production.",
        path,
    )
    return [key, *previous]


def root_secret(settings: Settings) -> str:
    if settings.root_client_secret is not None:
        return settings.root_client_secret.get_secret_value()
    if settings.env == "production":
        raise SystemExit("FHIRAUTH_ROOT_CLIENT_SECRET must be set in production")
    log.warning("FHIRAUTH_ROOT_CLIENT_SECRET is not set: the root client uses the development secret")
    return DEVELOPMENT_ROOT_SECRET

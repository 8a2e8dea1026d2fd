"""One settings object, read once from the environment (and .env) and passed down."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fhirauth.ratelimit import parse_rate

DEVELOPMENT_ROOT_SECRET = "secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIRAUTH_", env_file=".env", extra="ignore")

    storage: str = "sqlite:///./fhirauth.db"
    base_url: str = "http://localhost:8080"
    env: Literal["development", "production"] = "development"
    root_client_id: str = "root"
    root_client_secret: SecretStr | None = None
    secret_key: SecretStr | None = None
    previous_secret_keys: list[SecretStr] = Field(default_factory=list)
    secret_key_file: str | None = None
    seed: str = ""
    # The demo app at /demo and its webhook receiver (scripts/run); refused in production.
    demo: bool = False
    auth_config: str | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = 1_048_576
    # A request's line and headers (or a chunked body's trailer), blank line included; longer ones answer
    # 431 (fhirauth/http/serving/protocol.py).
    max_header_bytes: int = Field(default=65_536, ge=1024)
    # Seconds a request's line and headers may take from their first byte (a connection's first request:
    # from the connection); past them, 408 and the connection closed (fhirauth/http/serving/protocol.py).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request's body, a chunked one's trailer included, from the end of its head; past it, 408.
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    trust_proxy_headers: bool = False
    schemas_dir: str | None = None
    # Rate limits, "N/second|minute|hour|day" or "off"; see README "Abuse limits".
    rate_limit_login_ip: str = "30/minute"
    rate_limit_login_account: str = "20/minute"
    rate_limit_token_ip: str = "60/minute"
    rate_limit_signup_ip: str = "10/minute"
    rate_limit_signup_email: str = "5/hour"
    rate_limit_two_factor_ip: str = "30/minute"
    # Failed client authentications (wrong or unknown client secret), by address and by client id.
    rate_limit_client_auth_ip: str = "20/minute"
    rate_limit_client_auth_client: str = "20/minute"
    # private_key_jwt clients' jwks_uri: fetched within this time, and never from a loopback, private or
    # link-local address, nor over plain http, unless allowed (tests, closed networks).
    jwks_uri_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    jwks_uri_allow_private: bool = False
    # Password hashes that may wait for a hashing thread (unset: 32 a thread); past them, 503 at once.
    password_hash_queue: int | None = Field(default=None, ge=0)
    # Password brute-force detection: Keycloak's temporary lockout, "multiple" strategy.
    brute_force_protection: bool = True
    brute_force_failure_factor: int = Field(default=30, ge=1)
    brute_force_wait_increment_seconds: int = Field(default=60, ge=1)
    brute_force_max_wait_seconds: int = Field(default=900, ge=1)
    # NIST SP 800-63B §5.2.2: at most 100 consecutive failures per account.
    brute_force_max_failures: int = Field(default=100, ge=1, le=100)
    # WebAuthn: the relying party id (unset: the host of base_url; a registrable domain suffix of the
    # pages' host, never an IP address) and the origins a ceremony may run on (unset: base_url's).
    webauthn_rp_id: str | None = None
    webauthn_origins: list[str] = Field(default_factory=list)

    @field_validator(
        "rate_limit_login_ip",
        "rate_limit_login_account",
        "rate_limit_token_ip",
        "rate_limit_signup_ip",
        "rate_limit_signup_email",
        "rate_limit_two_factor_ip",
        "rate_limit_client_auth_ip",
        "rate_limit_client_auth_client",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    def seed_files(self) -> list[str]:
        return [part.strip() for part in self.seed.split(",") if part.strip()]

"""One settings object, read once from the environment (and .env) and passed down."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    auth_config: str | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = 1_048_576
    trust_proxy_headers: bool = False
    schemas_dir: str | None = None

    def seed_files(self) -> list[str]:
        return [part.strip() for part in self.seed.split(",") if part.strip()]

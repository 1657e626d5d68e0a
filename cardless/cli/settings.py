"""All configuration in one pydantic-settings class, read from ``CARDLESS_*`` environment variables.

The defaults describe the embedded system (``make run``): everything on loopback, SQLite under
``var/``, dev keystores generated on first run. ``get_settings()`` is cached; tests build their own
``Settings(...)`` and pass it to the factories instead of touching globals.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARDLESS_", extra="forbid")

    environment: str = Field("development", pattern="^(development|test|production)$")
    var_dir: Path = ROOT / "var"

    database_url: str = ""
    """SQLAlchemy URL; empty means SQLite at var/cardless.db."""

    chain_rpc_url: str = "http://127.0.0.1:8545"
    chain_port: int = Field(8545, ge=0, le=65535)
    confirmations: int = Field(0, ge=0, le=1_000)
    deployment_file: Path | None = None
    """Empty means var/deployment.json."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8000, ge=0, le=65535)
    simulator_port: int = Field(8601, ge=0, le=65535)

    public_url: str | None = None
    """Where providers reach the gateway for callbacks (the embedded system uses its own address)."""
    provider_base_url: str | None = None
    """Overrides the provider files' base_url (e.g. a simulator on another port)."""

    keystore_dir: Path | None = None
    """Empty means var/keys. Holds oracle-signer.json, gas-payer.json and quote-signer.json."""

    keystore_scrypt_n: int | None = Field(None, ge=2, le=2**20)
    """scrypt cost for keystores created on first run; None is eth-account's default (2**18)."""

    catalogue_file: Path = ROOT / "gateway" / "catalogue.toml"
    provider_files: list[Path] = [
        ROOT / "adapters" / "providers" / "simulator.toml",
        ROOT / "adapters" / "providers" / "simulator-md5.toml",
    ]

    quote_ttl_seconds: int = Field(600, ge=30, le=86_400)
    fulfilment_window_seconds: int = Field(3_600, ge=600, le=7 * 86_400)
    max_batch: int = Field(50, ge=1, le=200)
    not_found_grace_seconds: float = Field(10.0, gt=0, le=3_600)
    """How long after a submit the oracle still treats a provider's "not found" as "maybe in flight"
    before resubmitting under the same key."""

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _window_after_quote(self) -> Settings:
        if self.fulfilment_window_seconds <= self.quote_ttl_seconds:
            raise ValueError("fulfilment_window_seconds must be longer than quote_ttl_seconds")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'cardless.db'}"

    @property
    def effective_deployment_file(self) -> Path:
        return self.deployment_file or self.var_dir / "deployment.json"

    @property
    def effective_keystore_dir(self) -> Path:
        return self.keystore_dir or self.var_dir / "keys"


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""All configuration in one pydantic-settings class, read from ``CARDLESS_*`` environment variables.

Nothing below the CLI reads the environment for configuration: the wiring modules take what they need
from ``Settings`` and pass it down explicitly. The defaults describe a development machine: everything
on loopback, state under ``var/``.

Paths (one of each, whatever the command):

- the database is ``effective_database_url`` (``CARDLESS_DATABASE_URL``, else SQLite ``var/cardless.db``);
- the deployment file is ``effective_deployment_file`` (``CARDLESS_DEPLOYMENT_FILE``, else
  ``var/deployment.json``), written by ``cardless deploy`` and read by ``cardless gateway``/``oracle``;
- the embedded system (``cardless run``/``demo``) keeps its throw-away chain's state in ``var/embedded/``
  (``for_embedded()``): its chain lives in memory, so its database and deployment start fresh with it,
  and a ``cardless run`` can never overwrite a real deployment or database in ``var/``.

Outside development (``CARDLESS_ENVIRONMENT`` ``test`` or ``production``) nothing secret is generated:
a missing keystore, keystore password or account key is a start-up error naming the setting, and
placeholder values (``changethis``...) are refused. ``get_settings()`` is cached; tests build their
own ``Settings(...)`` and pass it to the factories instead of touching globals.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cardless.ledger.risk.rules import RiskRules
from cardless.protocol.chains import ChainProfile, chain_profile

__all__ = ["PLACEHOLDERS", "Settings", "get_settings"]

ROOT = Path(__file__).resolve().parents[2]

PLACEHOLDERS = frozenset(
    {"changethis", "changeme", "change-me", "change_me", "password", "secret", "example", "xxx", "todo"}
)
"""Values copied from an example file and never replaced; refused outside development."""

OPERATOR_KEY = re.compile(r"[A-Za-z0-9+/=_\-]{32,256}")
"""The shape of an operator key: 32 to 256 characters of base64 or base64url."""
_URL = r"^https?://[^\s/:]+(:\d{1,5})?(/\S*)?$"
_RATE = r"^[1-9][0-9]{0,8}/(second|minute|hour|day)$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARDLESS_", extra="forbid")

    environment: Literal["development", "test", "production"] = "development"
    """Only ``development`` creates keystores, their password and the account key on first use."""
    var_dir: Path = ROOT / "var"

    database_url: str = ""
    """SQLAlchemy URL; empty means SQLite at var/cardless.db. ``postgresql://user:pw@host/db`` (or a
    hosted provider's ``postgres://...?sslmode=require``) is PostgreSQL through psycopg 3. Oracle workers
    and gateways on several machines share one PostgreSQL database; an SQLite file is for one machine."""

    chain_rpc_url: str = Field("http://127.0.0.1:8545", pattern=_URL)
    chain_ws_url: str = Field("", pattern=r"^(|off|wss?://[^\s/:]+(:\d{1,5})?(/\S*)?)$")
    """The node's WebSocket endpoint, for the oracle's ``newHeads`` subscription (a block wakes it at
    once). Empty: ``chain_rpc_url`` with ws:// for http:// (anvil, geth and most hosted nodes serve both
    on related URLs); "off": poll only. A node without it is retried with a doubling delay while the
    oracle polls every 100 ms as before."""
    chain_port: int = Field(8545, ge=0, le=65535)
    """Port of the embedded chain's JSON-RPC server (0: any free port)."""
    dev_chain: Literal["embedded", "anvil"] = "embedded"
    """The chain ``cardless run``/``demo`` start: the in-process py-evm node, or anvil from npm
    (``@foundry-rs/anvil``) with the same dev accounts (``cardless run --chain anvil``)."""
    confirmations: int | None = Field(None, ge=0, le=10_000)
    """Blocks a payment must be under before it counts (and our transactions before they are final).
    Empty: the chain profile's (``cardless.protocol.chains``); required for a chain without a profile."""
    chain_finality: Literal["latest", "safe", "finalized"] | None = None
    """Never apply logs past this block tag (empty: the chain profile's)."""
    chain_log_range: int | None = Field(None, ge=1, le=1_000_000)
    """Blocks per eth_getLogs (empty: the chain profile's; halved when the node refuses a range)."""
    chain_fee_mode: Literal["eip1559", "legacy"] | None = None
    """Transaction fee fields (empty: the chain profile's)."""
    tx_bump_after_seconds: int | None = Field(None, ge=1, le=86_400)
    """Replace a transaction unmined for this long with fees 25 % higher (empty: the chain profile's)."""
    gas_low_balance_wei: int | None = Field(None, ge=0)
    """Alarm when the gas key holds less (empty: the chain profile's)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Serve the oracle's Prometheus metrics on ``metrics_host:metrics_port`` (empty: not served)."""
    metrics_host: str = Field("127.0.0.1", min_length=1, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")
    deployment_file: Path | None = None
    """Empty means var/deployment.json (var/embedded/deployment.json for the embedded system)."""

    gateway_host: str = Field("127.0.0.1", min_length=1, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")
    gateway_port: int = Field(8000, ge=0, le=65535)
    gateway_reuse_port: bool = False
    """Bind the gateway's port with SO_REUSEPORT: several ``cardless gateway`` processes on one host
    listen on one port and the kernel spreads connections among them (one process per core). They share
    the database and nothing else; the quote limits are counted there (docs/architecture.md)."""
    simulator_port: int = Field(8601, ge=0, le=65535)

    public_rpc_url: str | None = Field(None, pattern=_URL)
    """The JSON-RPC URL /v1/health offers wallets. Unset, a development system names its own node and
    any other names none: the node URL the system uses may carry a provider's API key."""
    public_url: str | None = Field(None, pattern=_URL)
    """Where providers reach the gateway for callbacks (the embedded system uses its own address)."""
    provider_base_url: str | None = Field(None, pattern=_URL)
    """Overrides the provider files' base_url (e.g. a simulator on another port)."""

    keystore_dir: Path | None = None
    """Empty means var/keys. Holds oracle-signer.json, gas-payer.json and quote-signer.json."""
    keystore_password: SecretStr | None = None
    """The keystores' password. Prefer ``keystore_password_file`` outside development."""
    keystore_password_file: Path | None = None
    """A file holding the keystores' password (e.g. a mounted secret)."""
    keystore_scrypt_n: int | None = Field(None, ge=2, le=2**20)
    """scrypt cost for keystores created on first run; None is eth-account's default (2**18)."""

    account_key: SecretStr | None = None
    """Base64 of the 32-byte key that encrypts buyers' game accounts at rest; empty means the file
    var/account-key (created on first run in development only)."""

    operator_key: SecretStr | None = None
    """Bearer token for operator reads (the whole order: buyer, provider reference, receipt,
    timeline). Empty means the file var/operator-key, created on first run in development only;
    elsewhere, with neither, operator reads are off and orders show only their public view."""

    catalogue_file: Path = ROOT / "gateway" / "catalogue.toml"
    provider_files: list[Path] = [
        ROOT / "adapters" / "providers" / "simulator.toml",
        ROOT / "adapters" / "providers" / "simulator-md5.toml",
    ]

    quote_ttl_seconds: int = Field(600, ge=30, le=86_400)
    chain_time_cache_seconds: float | None = Field(None, ge=0, le=5)
    """How long the gateway reuses the chain's time (the latest block's timestamp) that quotes are
    priced from; None: 1 s, or 0 in development, where tests move a dev chain's clock forward and quote
    at once. A reused time is older, never newer: a quote's expiry comes at most this much earlier."""
    fulfilment_window_seconds: int = Field(3_600, ge=600, le=7 * 86_400)
    max_batch: int = Field(50, ge=1, le=200)
    provider_concurrency: int = Field(256, ge=1, le=1_024)
    """Provider calls one oracle worker has in flight at most (and claims at once), and the kept-alive
    connections of each provider's HTTP client. At 16 the claims, once per tick, held paid orders back for
    seconds at 50 orders/s; at 64, a provider answering in 200 ms capped a worker near 64 / 0.2 s minus
    the queueing, and httpx kept only 20 connections alive, so the rest were opened and closed per call
    (docs/benchmarks.md)."""
    not_found_grace_seconds: float = Field(10.0, gt=0, le=3_600)
    """How long after a submit the oracle still treats a provider's "not found" as "maybe in flight"
    before resubmitting under the same key."""
    query_backoff_seconds: float = Field(1.0, gt=0, le=30)
    """How soon the oracle first queries a provider about an order whose outcome is unknown; later
    queries wait twice this, doubled again for each new unknown outcome of the order, up to 30 s
    (``oracles.outcomes.unknown_backoff``). Tests of provider faults set it shorter."""

    unpaid_retention_seconds: int = Field(3_600, ge=60, le=90 * 86_400)
    """How long after its quote expired (chain time) an order nobody paid is kept before the oracle
    deletes it with its timeline."""
    risk_screening_file: Path | None = None
    """Address screening list for the risk engine (one address a line, ``#`` comments): a paid order from
    a listed wallet is refunded. Read at start and again whenever the file changes."""
    risk_rules: RiskRules | None = None
    """The operator's default risk rules, as JSON with the fields of ``RiskRules`` (docs/risk.md); each
    merchant's own settings apply over them. Unset: the built-in defaults for a consumer top-up shop,
    except in development, where the velocity, new-wallet and score rules are off (``DEVELOPMENT_RISK``:
    the embedded system's ten dev wallets buy hundreds of orders in minutes, which those rules rightly
    hold); block lists, the screening list and amount ceilings apply everywhere."""
    risk_signal_retention_days: int = Field(30, ge=1, le=365)
    """Days the client network and user agent (keyed hashes) of a quote are kept for the risk engine."""

    quote_rate_per_client: str = Field("120/minute", pattern=_RATE)
    """Quotes one client address may ask for (``N/second|minute|hour|day``, a fixed window counted in
    the database, so every gateway process shares it). Each
    quote is a stored row and a provider validation call; ``cardless demo --orders 50`` asks for 50
    from loopback within about a minute."""
    quote_rate_per_buyer: str = Field("30/minute", pattern=_RATE)
    """Quotes for one buyer wallet, whatever the client address."""
    api_key_rate: str = Field("600/minute", pattern=_RATE)
    """Requests per merchant API key, unless the key carries its own quota."""
    siwe_domain: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-]+(:\d{1,5})?$")
    """The domain buyers' Sign-In with Ethereum messages must name; empty means the host (and port) of
    ``public_url``, else the gateway's own listening address."""

    log_format: Literal["text", "json"] | None = None
    """``json``: one JSON object per log line with the order id (``cardless.cli.logs``); empty means
    ``text`` in development and ``json`` elsewhere."""

    oracle_metrics_port: int | None = Field(None, ge=0, le=65535)
    """When set, ``cardless oracle`` serves Prometheus metrics (provider latency and errors) on this
    port of ``gateway_host``; the gateway serves the system's metrics at ``/metrics``."""

    webhook_timeout_seconds: float = Field(10.0, ge=1, le=30)
    """Per webhook attempt: the connect and read timeout (the whole attempt stops after twice this)."""
    webhook_retry_base_seconds: float = Field(30.0, gt=0, le=3_600)
    """The first retry of a failed webhook delivery waits this long, doubling to an hour per retry;
    deliveries are retried for 72 h and an endpoint failing for 24 h is disabled."""

    cosigner_urls: list[str] = []
    """The co-signers the oracle asks for another proof key's signature (``cardless cosigner`` processes,
    each with its own key) while the escrow's ``oracleThreshold`` wants more signatures than its own; JSON,
    e.g. ``["http://10.0.0.5:8700"]``. Empty: the oracle signs alone (threshold 1)."""
    cosigner_secret: SecretStr | None = None
    """The secret the oracle and its co-signers authenticate requests with (HMAC, at least 32 characters).
    Prefer ``cosigner_secret_file``; in development, with neither, the file var/cosigner-secret."""
    cosigner_secret_file: Path | None = None
    cosigner_timeout_seconds: float = Field(10.0, gt=0, le=60)
    """The oracle's timeout for one co-signer request (the co-signer asks the chain and the provider)."""
    cosigner_host: str = Field("127.0.0.1", min_length=1, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")
    cosigner_port: int = Field(8700, ge=0, le=65535)
    """Where ``cardless cosigner`` listens."""
    cosigner_keystore: Path | None = None
    """The co-signer's own proof key (empty: ``cosigner-signer.json`` in the keystore directory), opened
    with the keystore password like the oracle's; never the oracle's own key."""
    cosigner_journal: Path | None = None
    """The co-signer's record of what it signed (SQLite; empty: var/cosigner/journal.db)."""

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("account_key")
    @classmethod
    def _account_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            key = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        if len(key) != 32:
            raise ValueError(f"must decode to 32 bytes, got {len(key)}")
        return value

    @field_validator("operator_key")
    @classmethod
    def _operator_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not OPERATOR_KEY.fullmatch(value.get_secret_value()):
            raise ValueError(
                "must be 32 to 256 characters of base64 or base64url (e.g. `openssl rand -base64 32`)"
            )
        return value

    @field_validator("cosigner_urls")
    @classmethod
    def _cosigner_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.fullmatch(_URL, url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        if len(set(value)) != len(value):
            raise ValueError("a co-signer is listed twice")
        return value

    @field_validator("provider_files")
    @classmethod
    def _some_providers(cls, value: list[Path]) -> list[Path]:
        if not value:
            raise ValueError("at least one provider file is needed")
        return value

    @model_validator(mode="after")
    def _window_after_quote(self) -> Settings:
        if self.fulfilment_window_seconds <= self.quote_ttl_seconds:
            raise ValueError("fulfilment_window_seconds must be longer than quote_ttl_seconds")
        return self

    @model_validator(mode="after")
    def _no_placeholders(self) -> Settings:
        if self.environment == "development":
            return self
        password = self.keystore_password.get_secret_value() if self.keystore_password else None
        if password is not None and password.strip().lower() in PLACEHOLDERS | {""}:
            raise ValueError(
                "keystore_password: a placeholder value is not a password outside development "
                "(set CARDLESS_KEYSTORE_PASSWORD_FILE to a file holding the real one)"
            )
        return self

    def chain_profile(self, chain_id: int) -> ChainProfile:
        """The chain's profile with these settings' overrides; raises ``ChainProfileError`` for a chain
        without a profile when ``CARDLESS_CONFIRMATIONS`` is not set."""
        return chain_profile(
            chain_id,
            confirmations=self.confirmations,
            finality=self.chain_finality,
            max_log_range=self.chain_log_range,
            fee_mode=self.chain_fee_mode,
            bump_after_seconds=self.tx_bump_after_seconds,
            low_balance_wei=self.gas_low_balance_wei,
        )

    @property
    def effective_chain_time_cache_seconds(self) -> float:
        if self.chain_time_cache_seconds is not None:
            return self.chain_time_cache_seconds
        return 0.0 if self.is_development else 1.0

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def default_risk_rules(self) -> RiskRules:
        """The rules the oracle applies to a merchant that set none of its own (see ``risk_rules``)."""
        if self.risk_rules is not None:
            return self.risk_rules
        return DEVELOPMENT_RISK if self.is_development else RiskRules()

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("text" if self.is_development else "json")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'cardless.db'}"

    @property
    def effective_deployment_file(self) -> Path:
        return self.deployment_file or self.var_dir / "deployment.json"

    @property
    def effective_keystore_dir(self) -> Path:
        return self.keystore_dir or self.var_dir / "keys"

    @property
    def account_key_file(self) -> Path:
        return self.var_dir / "account-key"

    @property
    def operator_key_file(self) -> Path:
        return self.var_dir / "operator-key"

    @property
    def effective_cosigner_keystore(self) -> Path:
        return self.cosigner_keystore or self.effective_keystore_dir / "cosigner-signer.json"

    @property
    def effective_cosigner_journal(self) -> Path:
        return self.cosigner_journal or self.var_dir / "cosigner" / "journal.db"

    @property
    def embedded_dir(self) -> Path:
        """The embedded system's chain-bound state (database, deployment file), wiped at each start."""
        return self.var_dir / "embedded"

    def for_embedded(self) -> Settings:
        """These settings with the database and deployment file in ``var/embedded/`` unless set."""
        return self.model_copy(
            update={
                "database_url": self.database_url or f"sqlite:///{self.embedded_dir / 'cardless.db'}",
                "deployment_file": self.deployment_file or self.embedded_dir / "deployment.json",
            }
        )


# The development system's default rules: the built-in ones without velocity limits, the new-wallet
# limit and the score (burst, new network, new client), which a demo's few wallets always trip.
DEVELOPMENT_RISK = RiskRules(
    wallet_velocity=(),
    account_velocity=(),
    sku_velocity=(),
    new_wallet_max_orders=10_000,
    burst_points=0,
    new_network_points=0,
    new_agent_points=0,
)


@lru_cache
def get_settings() -> Settings:
    return Settings()

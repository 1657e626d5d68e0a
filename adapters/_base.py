"""The provider adapter protocol and the normalised values that cross it.

An adapter turns one provider's API into five calls with one vocabulary of outcomes, so the oracle
never sees provider codes. The rules every adapter keeps:

- ``submit`` carries our order id as the provider-side idempotency key. Repeating it returns the
  state of the first request and never credits twice.
- ``submit`` and ``query`` report a timeout, connection reset, 5xx or unparseable reply as
  ``UNKNOWN``, never as a failure: the top-up may have happened. The oracle queries by our key until
  the outcome resolves, and only ever resubmits under the same key.
- ``FAILED_NOT_CHARGED`` means the provider said so explicitly; it is what makes rerouting safe.
- Errors (``adapters._exceptions``) are classified by what the oracle does next: retry, reroute,
  refund, or call an operator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from adapters._exceptions import AccountRejected, AdapterError, ProviderRefused, TopupReversed
from adapters.health import HealthSnapshot

__all__ = [
    "PROTOCOL_METHODS",
    "SYNC_METHODS",
    "ProviderAdapter",
    "Receipt",
    "Refusal",
    "TopupRequest",
    "TopupResult",
    "TopupStatus",
    "Validation",
]


class TopupStatus(StrEnum):
    """The normalised state of one top-up at one provider."""

    SUCCEEDED = "succeeded"
    """Credited; the result carries a ``Receipt``."""
    PROCESSING = "processing"
    """Accepted, not credited yet; query again or wait for the callback."""
    FAILED_NOT_CHARGED = "failed_not_charged"
    """The provider says it refused or failed and charged nothing; ``refusal`` says why."""
    REVERSED = "reversed"
    """Credited, then reversed by the provider."""
    UNKNOWN = "unknown"
    """We do not know (timeout, reset, 5xx, unparseable reply, not found yet); query by our key."""


class Refusal(StrEnum):
    """Why a provider refused; decides between rerouting and refunding."""

    INVALID_ACCOUNT = "invalid_account"
    UNKNOWN_SKU = "unknown_sku"
    OUT_OF_STOCK = "out_of_stock"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    """Our prepaid balance at the provider is too low."""
    REJECTED = "rejected"
    """The provider reported a failure without a reason we recognise (still not charged)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider confirms it credited; the oracle hashes it into the fulfilment proof."""

    provider: str
    provider_ref: str
    order_id: str
    sku: str
    credited: int
    """Units credited to the account (points, cents of airtime), as the provider reports them."""
    account: str
    completed_at: int
    """Unix seconds, provider's clock."""

    def as_dict(self) -> dict[str, str | int]:
        """Plain JSON-ready fields (the account is replaced by its commitment before hashing)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Validation:
    """The answer to "can this account receive this SKU?", asked before the buyer pays."""

    ok: bool
    sku: str
    account: str
    nickname: str | None = None
    refusal: Refusal | None = None
    """Set when ``ok`` is false."""
    provider_code: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TopupRequest:
    """One top-up. ``order_key`` is our order id and the provider-side idempotency key."""

    order_key: str
    sku: str
    account: str
    callback_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("order_key", "sku", "account"):
            if not getattr(self, name):
                raise ValueError(f"TopupRequest.{name} must not be empty")


@dataclasses.dataclass(frozen=True, slots=True)
class TopupResult:
    """The normalised outcome of ``submit``, ``query`` or a callback.

    ``receipt`` is set exactly when ``status`` is ``SUCCEEDED``; ``refusal`` when it is
    ``FAILED_NOT_CHARGED``. ``provider_code`` and ``detail`` are for logs and operators only.
    """

    status: TopupStatus
    provider: str
    order_key: str | None
    provider_ref: str | None = None
    receipt: Receipt | None = None
    refusal: Refusal | None = None
    provider_code: str | None = None
    detail: str = ""
    raw: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)
    """The provider's reply as parsed, kept for the audit trail."""
    unseen: bool = False
    """With ``UNKNOWN``: the provider said it has no record of this order (yet). Not proof that nothing
    happened (the request may still be in flight), but after a grace period it is the signal to resubmit
    under the same key."""

    def __post_init__(self) -> None:
        if (self.status is TopupStatus.SUCCEEDED) != (self.receipt is not None):
            raise ValueError("a receipt is required for SUCCEEDED and only for SUCCEEDED")
        if (self.status is TopupStatus.FAILED_NOT_CHARGED) != (self.refusal is not None):
            raise ValueError("a refusal is required for FAILED_NOT_CHARGED and only for it")
        if self.unseen and self.status is not TopupStatus.UNKNOWN:
            raise ValueError("unseen is only meaningful with UNKNOWN")

    @property
    def is_final(self) -> bool:
        """True when querying again cannot change the answer (short of a later reversal)."""
        return self.status in (TopupStatus.SUCCEEDED, TopupStatus.FAILED_NOT_CHARGED, TopupStatus.REVERSED)

    def error(self) -> AdapterError | None:
        """The error that says what to do about a negative final outcome, or None.

        ``FAILED_NOT_CHARGED`` gives ``AccountRejected`` (refund) for an invalid account and
        ``ProviderRefused`` (reroute) otherwise; ``REVERSED`` gives ``TopupReversed`` (refund).
        """
        message = self.detail or (self.provider_code or self.status.value)
        if self.status is TopupStatus.FAILED_NOT_CHARGED:
            cls: type[AdapterError] = (
                AccountRejected if self.refusal is Refusal.INVALID_ACCOUNT else ProviderRefused
            )
            return cls(message, provider=self.provider, code=self.provider_code, result=self)
        if self.status is TopupStatus.REVERSED:
            return TopupReversed(message, provider=self.provider, code=self.provider_code, result=self)
        return None

    def raise_for_status(self) -> TopupResult:
        """Raise ``error()`` if there is one; otherwise return self (for chaining)."""
        error = self.error()
        if error is not None:
            raise error
        return self


@runtime_checkable
class ProviderAdapter(Protocol):
    """One top-up provider. Implementations take their HTTP client by injection.

    Every method is a coroutine except ``health``, which reads local state (the adapter's circuit
    breaker) and must answer without I/O. ``adapters.registry`` refuses a class that lacks one.
    """

    def health(self) -> HealthSnapshot:
        """This provider's circuit-breaker state, for the gateway's health endpoint and operators.

        Synchronous and without I/O: it reports what the adapter already knows.
        """
        ...

    async def validate(self, sku: str, account: str) -> Validation:
        """Check the account can receive the SKU, before the buyer pays.

        An invalid account, unknown SKU or empty stock is ``Validation(ok=False, refusal=...)``.
        Raises ``ProviderUnreachable`` or ``ProviderUnavailable`` when no answer can be had.
        """
        ...

    async def submit(self, request: TopupRequest) -> TopupResult:
        """Ask for the top-up, with ``request.order_key`` as the idempotency key.

        Returns ``SUCCEEDED``, ``PROCESSING`` or ``UNKNOWN``. Raises a ``RerouteError`` when the
        provider provably charged nothing (refusal, or circuit open), a ``RefundError`` when the
        outcome is final and negative, a ``ConfigError`` when an operator must act.
        """
        ...

    async def query(self, order_key: str | None, provider_ref: str | None = None) -> TopupResult:
        """The current state of a top-up, by our key (preferred) or the provider's reference.

        Any status, never raises for the top-up's own outcome (see ``TopupResult.error``). A
        provider that does not know the key answers ``UNKNOWN``: a request can still be in flight.
        """
        ...

    async def verify_callback(self, raw_body: bytes, headers: Mapping[str, str], now: float) -> TopupResult:
        """Authenticate a provider callback and normalise it.

        Raises ``ForgedCallback`` on a bad signature or body, ``StaleCallback`` when the timestamp
        is more than the provider's tolerance away from ``now`` (unix seconds). Duplicates verify
        fine: de-duplication belongs to the state machine.
        """
        ...

    async def balance(self) -> int:
        """Our prepaid balance at the provider, in the provider's base unit (e.g. cents)."""
        ...


PROTOCOL_METHODS: tuple[str, ...] = ("validate", "submit", "query", "verify_callback", "balance", "health")
"""The methods every adapter must define: coroutines, except those in ``SYNC_METHODS``."""

SYNC_METHODS: frozenset[str] = frozenset({"health"})
"""Protocol methods that must be plain (not ``async``) methods: they answer from local state."""

"""The provider's books: merchants, catalogue, game accounts, orders, the credit ledger, armed faults.

Everything lives in memory behind one lock. Each public method is one atomic step of the provider, so
a top-up's checks, the stock and prepaid-balance debits, the credit and its ledger entry happen
together or not at all, whichever thread (server loop or a test) calls in.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from adapters.simulator.config import SimulatorConfig
from adapters.simulator.signing import SignScheme

__all__ = [
    "Credit",
    "Fault",
    "FaultMode",
    "MerchantKeys",
    "OrderStatus",
    "OrderView",
    "Refusal",
    "SimulatorState",
    "TopupOutcome",
]

OrderStatus = Literal["SUCCESS", "PROCESSING", "FAILED", "REVERSED"]
Refusal = Literal["INVALID_ACCOUNT", "UNKNOWN_SKU", "OUT_OF_STOCK", "INSUFFICIENT_BALANCE"]
FaultMode = Literal[
    "latency",
    "timeout",
    "error_5xx_before_commit",
    "lost_after_commit",
    "duplicate_callback",
    "forged_callback",
    "not_found_in_flight",
    "invalid_account",
    "out_of_stock",
    "insufficient_balance",
    "async",
]


@dataclass(frozen=True)
class MerchantKeys:
    id: str
    secret: str
    scheme: SignScheme
    callback_secret: str


@dataclass
class _Merchant:
    keys: MerchantKeys
    balance_cents: int


@dataclass
class _Sku:
    id: str
    game: str
    points: int
    cost_cents: int
    stock: int


@dataclass
class _Order:
    merchant_id: str
    order_no: str
    provider_ref: str
    sku: str
    account: str
    status: OrderStatus
    reason: Refusal | None
    callback_url: str | None
    credited: int = 0
    completed_at: int | None = None
    # Kept after a reversal so the claw-back debits what was credited.
    game: str | None = None
    points: int = 0
    cost_cents: int = 0


@dataclass(frozen=True)
class OrderView:
    """A snapshot of an order, safe to read outside the lock."""

    merchant_id: str
    order_no: str
    provider_ref: str
    sku: str
    account: str
    status: OrderStatus
    reason: Refusal | None
    callback_url: str | None
    credited: int
    completed_at: int | None

    def reply(self) -> dict[str, Any]:
        """The order as the API shows it (topup, query and callback bodies), without `code`."""
        return {
            "order_no": self.order_no,
            "provider_ref": self.provider_ref,
            "status": self.status,
            "sku": self.sku,
            "account": self.account,
            "credited": self.credited,
            "completed_at": self.completed_at,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Credit:
    """One actual credit to a game account; the ledger is the ground truth tests count double top-ups on."""

    merchant_id: str
    order_no: str
    provider_ref: str
    account: str
    sku: str
    points: int
    at: int


@dataclass(frozen=True)
class TopupOutcome:
    """What a top-up request did: `conflict` (and no order), or the order and whether this call created it."""

    order: OrderView | None
    created: bool
    conflict: bool = False


@dataclass
class Fault:
    """An armed fault. `count=None` fires until cleared; `probability` is rolled per matching request."""

    id: int
    mode: FaultMode
    count: int | None = None
    probability: float = 1.0
    order_no: str | None = None
    sku: str | None = None
    latency_ms: int | None = None
    fired: int = field(default=0)

    def matches(self, order_no: str | None, sku: str | None) -> bool:
        return (self.order_no is None or self.order_no == order_no) and (self.sku is None or self.sku == sku)


class SimulatorState:
    """The provider's in-memory state. Thread-safe; see the module docstring."""

    def __init__(self, config: SimulatorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._account_re = re.compile(config.account_pattern)
        self._rng = random.Random(config.seed)
        # Never reset, so a provider_ref is never reused across `reset()`; the prefix is this state's
        # birth in milliseconds, so a simulator restarted by `cardless run` does not hand out the refs its
        # previous life gave orders the database still holds.
        self._ref_prefix = f"SIM{int(clock() * 1000):x}-"
        self._next_ref = 1
        self._next_fault = 1
        self._merchants: dict[str, _Merchant] = {}
        self._skus: dict[str, _Sku] = {}
        self._orders: dict[tuple[str, str], _Order] = {}
        self._by_ref: dict[str, tuple[str, str]] = {}
        self._accounts: dict[str, dict[str, int]] = {}
        self._credits: list[Credit] = []
        self._reversals: list[Credit] = []
        self._faults: list[Fault] = []
        self._restore()

    # -- reading -------------------------------------------------------------------------------------

    def now(self) -> int:
        return int(self._clock())

    def merchant_keys(self, merchant_id: str) -> MerchantKeys | None:
        with self._lock:
            merchant = self._merchants.get(merchant_id)
            return merchant.keys if merchant else None

    def balance(self, merchant_id: str) -> int:
        with self._lock:
            return self._merchants[merchant_id].balance_cents

    def stock(self, sku_id: str) -> int:
        with self._lock:
            return self._skus[sku_id].stock

    def account_points(self, account: str) -> dict[str, int] | None:
        """Points per game, or None for an account never credited (accounts are created on first credit)."""
        with self._lock:
            points = self._accounts.get(account)
            return dict(points) if points is not None else None

    def ledger(self) -> tuple[list[Credit], list[Credit]]:
        """(credits, reversals), oldest first."""
        with self._lock:
            return list(self._credits), list(self._reversals)

    def find(
        self, merchant_id: str, *, order_no: str | None = None, provider_ref: str | None = None
    ) -> OrderView | None:
        """The merchant's order by our key or by provider reference; both given must name the same order."""
        with self._lock:
            key = (merchant_id, order_no) if order_no is not None else self._by_ref.get(provider_ref or "")
            order = self._orders.get(key) if key else None
            if order is None or order.merchant_id != merchant_id:
                return None
            if provider_ref is not None and order.provider_ref != provider_ref:
                return None
            return _view(order)

    def validate(self, sku_id: str, account: str) -> Refusal | None:
        with self._lock:
            sku = self._skus.get(sku_id)
            if sku is None:
                return "UNKNOWN_SKU"
            if not self._valid_account(account):
                return "INVALID_ACCOUNT"
            if sku.stock <= 0:
                return "OUT_OF_STOCK"
            return None

    # -- state transitions ---------------------------------------------------------------------------

    def topup(
        self, merchant_id: str, order_no: str, sku_id: str, account: str, callback_url: str | None
    ) -> TopupOutcome:
        """Idempotent by (merchant, order_no). A new order is refused (recorded FAILED, nothing charged),
        committed and credited (SUCCESS), or committed and left PROCESSING for `complete` (async)."""
        with self._lock:
            existing = self._orders.get((merchant_id, order_no))
            if existing is not None:
                if (existing.sku, existing.account) != (sku_id, account):
                    return TopupOutcome(order=None, created=False, conflict=True)
                return TopupOutcome(order=_view(existing), created=False)

            order = _Order(
                merchant_id=merchant_id,
                order_no=order_no,
                provider_ref=self._new_ref(),
                sku=sku_id,
                account=account,
                status="PROCESSING",
                reason=None,
                callback_url=callback_url,
            )
            self._orders[(merchant_id, order_no)] = order
            self._by_ref[order.provider_ref] = (merchant_id, order_no)

            merchant = self._merchants[merchant_id]
            refusal = self._refusal_locked(merchant, sku_id, account, order_no)
            if refusal is not None:
                order.status, order.reason, order.completed_at = "FAILED", refusal, self.now()
                return TopupOutcome(order=_view(order), created=True)

            # Checks passed: charge the merchant and take the unit out of stock in the same step.
            sku = self._skus[sku_id]
            sku.stock -= 1
            merchant.balance_cents -= sku.cost_cents
            order.game, order.points, order.cost_cents = sku.game, sku.points, sku.cost_cents
            is_async = self._config.async_mode or self._take_locked("async", order_no, sku_id) is not None
            if not is_async:
                self._credit_locked(order)
            return TopupOutcome(order=_view(order), created=True)

    def complete(self, merchant_id: str, order_no: str) -> OrderView | None:
        """Credit an async order still PROCESSING; None if it is gone (reset) or already final."""
        with self._lock:
            order = self._orders.get((merchant_id, order_no))
            if order is None or order.status != "PROCESSING":
                return None
            self._credit_locked(order)
            return _view(order)

    def reverse(self, merchant_id: str, order_no: str) -> OrderView | None:
        """The publisher claws a credit back: points debited, the merchant refunded. None unless SUCCESS."""
        with self._lock:
            order = self._orders.get((merchant_id, order_no))
            if order is None or order.status != "SUCCESS" or order.game is None:
                return None
            points = self._accounts[order.account]
            points[order.game] -= order.points
            self._merchants[merchant_id].balance_cents += order.cost_cents
            order.status, order.credited, order.completed_at = "REVERSED", 0, self.now()
            self._reversals.append(_entry(order, order.completed_at))
            return _view(order)

    def merchants_with_order(self, order_no: str) -> list[str]:
        with self._lock:
            return sorted(m for (m, o) in self._orders if o == order_no)

    # -- faults --------------------------------------------------------------------------------------

    def arm(self, mode: FaultMode, **options: Any) -> Fault:
        with self._lock:
            fault = Fault(id=self._next_fault, mode=mode, **options)
            self._next_fault += 1
            self._faults.append(fault)
            return replace(fault)

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, mode: FaultMode, order_no: str | None = None, sku: str | None = None) -> Fault | None:
        """The first armed `mode` fault matching this request, if its probability roll fires."""
        with self._lock:
            return self._take_locked(mode, order_no, sku)

    def reset(self) -> None:
        """Orders, ledger, accounts and faults cleared; balances and stock as configured."""
        with self._lock:
            self._orders.clear()
            self._by_ref.clear()
            self._accounts.clear()
            self._credits.clear()
            self._reversals.clear()
            self._faults.clear()
            self._rng = random.Random(self._config.seed)
            self._restore()

    # -- internals (caller holds the lock) -----------------------------------------------------------

    def _restore(self) -> None:
        self._merchants = {
            m.id: _Merchant(MerchantKeys(m.id, m.secret, m.scheme, m.callback_secret), m.balance_cents)
            for m in self._config.merchants
        }
        self._skus = {s.id: _Sku(s.id, s.game, s.points, s.cost_cents, s.stock) for s in self._config.skus}

    def _valid_account(self, account: str) -> bool:
        return self._account_re.fullmatch(account) is not None and account not in self._config.banned_accounts

    def _refusal_locked(
        self, merchant: _Merchant, sku_id: str, account: str, order_no: str
    ) -> Refusal | None:
        # Natural checks first, each followed by the matching forced fault, so a fault never hides a real
        # refusal and is only used up when the request got that far.
        sku = self._skus.get(sku_id)
        if sku is None:
            return "UNKNOWN_SKU"
        if not self._valid_account(account) or self._take_locked("invalid_account", order_no, sku_id):
            return "INVALID_ACCOUNT"
        if sku.stock <= 0 or self._take_locked("out_of_stock", order_no, sku_id):
            return "OUT_OF_STOCK"
        if merchant.balance_cents < sku.cost_cents or self._take_locked(
            "insufficient_balance", order_no, sku_id
        ):
            return "INSUFFICIENT_BALANCE"
        return None

    def _credit_locked(self, order: _Order) -> None:
        assert order.game is not None
        now = self.now()
        points = self._accounts.setdefault(order.account, {})
        points[order.game] = points.get(order.game, 0) + order.points
        order.status, order.credited, order.completed_at = "SUCCESS", order.points, now
        self._credits.append(_entry(order, now))

    def _take_locked(self, mode: FaultMode, order_no: str | None, sku: str | None) -> Fault | None:
        for fault in self._faults:
            if fault.mode != mode or not fault.matches(order_no, sku):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                return None
            fault.fired += 1
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            return replace(fault)
        return None

    def _new_ref(self) -> str:
        ref = f"{self._ref_prefix}{self._next_ref:010d}"
        self._next_ref += 1
        return ref


def _view(order: _Order) -> OrderView:
    return OrderView(
        merchant_id=order.merchant_id,
        order_no=order.order_no,
        provider_ref=order.provider_ref,
        sku=order.sku,
        account=order.account,
        status=order.status,
        reason=order.reason,
        callback_url=order.callback_url,
        credited=order.credited,
        completed_at=order.completed_at,
    )


def _entry(order: _Order, at: int) -> Credit:
    return Credit(
        order.merchant_id, order.order_no, order.provider_ref, order.account, order.sku, order.points, at
    )

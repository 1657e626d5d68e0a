"""Synthetic traffic for tests, the demo's analytics and the benches: deterministic for a seed.

``generate(SyntheticConfig(...), cipher)`` draws ``days`` of paid orders with weekly and daily
seasonality in the merchant's local time (``tz_offset_minutes``), a weekend-evening student peak
(Saturday and Sunday 19:00-22:00 local, ``peak_factor`` times the ordinary evening rate), a population of
returning buyers (a few heavy, most occasional) each with a home network and client, the outcome of each
order (provider, latency, fulfilment time, refund reason), and injected fraud bursts with labels:

- ``stolen_wallet``: a known buyer's wallet, suddenly from a new network and client, tops up several
  fresh game accounts within minutes;
- ``stolen_account``: a known buyer's game account topped up by several fresh wallets within minutes,
  from a new network and client.

The rows are plain dicts of column values, so tests insert them with the ORM (``load``) and the bench
with PostgreSQL ``COPY``. Each provider call is both on the timeline (submit and answer events) and in
``attempts`` (the ``provider_attempts`` rows ``transition`` writes for it).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import insert
from sqlalchemy.orm import Session

from cardless.ledger import rollups
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, OrderEvent, OrderState, ProviderAttempt
from cardless.ledger.risk.models import RequestSignal
from cardless.ledger.risk.signals import network_of
from cardless.protocol import RefundReason

__all__ = ["Burst", "Synthetic", "SyntheticConfig", "generate", "load", "local_hour_weight"]

S = OrderState
SKUS: tuple[tuple[str, int], ...] = (
    ("genshin-60", 990_000),
    ("genshin-300", 4_990_000),
    ("genshin-980", 14_990_000),
    ("pubg-60", 990_000),
    ("pubg-325", 4_990_000),
    ("honor-80", 1_490_000),
)
SKU_WEIGHTS = (30, 12, 4, 25, 9, 20)
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Safari/604.1",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) Chrome/131.0 Mobile",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) Chrome/130.0 Mobile",
)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    days: int = 30
    seed: int = 14
    start: datetime = datetime(2026, 11, 2, tzinfo=UTC)
    """Midnight local time of the first day (a Monday), given in UTC."""
    tz_offset_minutes: int = 480
    """The shop's local time (UTC+8 by default): seasonality is drawn in it."""
    orders_per_day: float = 150.0
    buyers: int = 800
    peak_factor: float = 3.0
    bursts: int = 6
    burst_size: tuple[int, int] = (4, 8)
    merchant: str = "0x" + "33" * 20
    token: str = USDC
    chain_id: int = 31337
    escrow: str = "0x" + "11" * 20
    events: bool = True


@dataclasses.dataclass(frozen=True)
class Burst:
    id: int
    kind: str
    order_ids: tuple[str, ...]
    start: datetime


@dataclasses.dataclass
class Synthetic:
    config: SyntheticConfig
    orders: list[dict[str, Any]]
    events: list[dict[str, Any]]
    signals: list[dict[str, Any]]
    bursts: list[Burst]
    fraud: dict[str, int]
    """Order id -> the burst it belongs to."""
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def normal_ids(self) -> list[str]:
        return [o["id"] for o in self.orders if o["id"] not in self.fraud]


def local_hour_weight(weekday: int, hour: int, peak_factor: float) -> float:
    """Relative order rate at a local hour; ``weekday`` 0 = Monday. Nights are quiet, evenings busy,
    weekends busier, and Saturday and Sunday 19:00-22:00 the student peak."""
    daily = (0.25, 0.12, 0.06, 0.04, 0.04, 0.06, 0.15, 0.35, 0.45, 0.5, 0.55, 0.65,
             0.8, 0.75, 0.6, 0.6, 0.7, 0.85, 1.0, 1.3, 1.4, 1.4, 1.2, 0.6)[hour]  # fmt: skip
    weekly = (0.85, 0.85, 0.9, 0.95, 1.1, 1.35, 1.3)[weekday]
    peak = peak_factor if weekday >= 5 and 19 <= hour < 22 else 1.0
    return daily * weekly * peak


@dataclasses.dataclass
class _Buyer:
    wallet: str
    accounts: list[str]
    network: str
    agent: str
    weight: float


def _address(rng: random.Random) -> str:
    return to_checksum_address("0x" + f"{rng.getrandbits(160):040x}")


def _ip(rng: random.Random) -> str:
    return f"{rng.randint(11, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


class _Builder:
    def __init__(self, config: SyntheticConfig, cipher: AccountCipher) -> None:
        self.c = config
        self.cipher = cipher
        self.rng = random.Random(config.seed)
        self.orders: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.signals: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self._hashes: dict[str, str] = {}
        self._networks: dict[str, str] = {}
        self._agents: dict[str, str] = {}

    def _hash(self, table: dict[str, str], label: str, value: str) -> str:
        found = table.get(value)
        if found is None:
            found = table[value] = self.cipher.keyed_hash(label, value)
        return found

    def order(
        self, buyer: str, account: str, at: datetime, client: str, agent: str, *, fraud: bool = False
    ) -> str:
        rng, c = self.rng, self.c
        order_id = "0x" + f"{rng.getrandbits(256):064x}"
        sku, price = rng.choices(SKUS, weights=SKU_WEIGHTS)[0]
        quoted = at - timedelta(seconds=rng.randint(8, 90))
        account_hash = self._hash(self._hashes, "account", account.casefold())
        provider = "alpha" if rng.random() < 0.7 else "beta"
        submitted = at + timedelta(seconds=rng.uniform(0.3, 2.0))
        latency = rng.lognormvariate(math.log(0.8 if provider == "alpha" else 1.6), 0.5)
        ok = rng.random() < (0.97 if provider == "alpha" else 0.92)
        refund_reason: int | None = None
        state = S.SETTLED
        fulfilled_at: int | None = None
        if fraud:
            ok, state, refund_reason = False, S.REFUNDED, int(RefundReason.RISK_REJECTED)
        elif not ok:
            state = S.REFUNDED
            refund_reason = int(
                rng.choices(
                    (RefundReason.PROVIDER_REJECTED, RefundReason.OUT_OF_STOCK, RefundReason.INVALID_ACCOUNT,
                     RefundReason.PROVIDER_UNAVAILABLE, RefundReason.DEADLINE_APPROACHING),
                    weights=(40, 20, 20, 15, 5),
                )[0]
            )  # fmt: skip
        done = submitted + timedelta(seconds=latency)
        if ok:
            fulfilled_at = int(done.timestamp())
        closed = done + timedelta(seconds=rng.uniform(5, 40))
        self.orders.append(
            {
                "id": order_id,
                "state": state.value,
                "chain_id": c.chain_id,
                "escrow": c.escrow,
                "sku": sku,
                "providers": [provider],
                "provider_index": 0,
                "buyer": buyer,
                "merchant": c.merchant,
                "token": c.token,
                "amount": price,
                "fee_bps": 250,
                "quote_expiry": int(quoted.timestamp()) + 900,
                "fulfilment_deadline": int(quoted.timestamp()) + 3_600,
                "sku_hash": "0x" + "44" * 32,
                "account_commitment": "0x" + "55" * 32,
                "account_ciphertext": b"",
                "quote_signer": "0x" + "77" * 20,
                "quote_signature": "0x" + "88" * 65,
                "paid_tx": "0x" + order_id[2:66],
                "paid_block": 1,
                "paid_at": at,
                "fulfilled_at": fulfilled_at,
                "refund_reason": refund_reason,
                "closed_at": closed,
                "attempts": 1,
                "account_hash": account_hash,
                "created_at": quoted,
                "updated_at": closed,
            }
        )
        self.signals.append(
            {
                "order_id": order_id,
                "buyer": buyer,
                "account_hash": account_hash,
                "network_hash": self._hash(self._networks, "network", network_of(client)),
                "agent_hash": self._hash(self._agents, "agent", agent),
                "seen_at": quoted,
            }
        )
        if c.events and not fraud:
            self.events.append(
                {"order_id": order_id, "at": submitted, "from_state": S.RISK_CHECKED.value,
                 "to_state": S.SUBMITTING.value, "reason": f"submitting to {provider}",
                 "detail": {"provider": provider}}
            )  # fmt: skip
            self.events.append(
                {"order_id": order_id, "at": done, "from_state": S.SUBMITTING.value,
                 "to_state": (S.SUCCEEDED if ok else S.FAILED_FINAL).value,
                 "reason": "provider answered", "detail": None}
            )  # fmt: skip
            self.attempts.append(
                {"order_id": order_id, "merchant": c.merchant, "provider": provider,
                 "submitted_at": submitted, "outcome": (S.SUCCEEDED if ok else S.FAILED_FINAL).value,
                 "answered_at": done}
            )  # fmt: skip
        return order_id


def _buyers(b: _Builder) -> list[_Buyer]:
    rng = b.rng
    out = []
    for _ in range(b.c.buyers):
        accounts = [f"uid-{rng.randint(10**7, 10**8 - 1)}" for _ in range(1 if rng.random() < 0.85 else 2)]
        # A few heavy buyers, most occasional (a Pareto tail), so repeat purchases are realistic.
        out.append(_Buyer(_address(rng), accounts, _ip(rng), rng.choice(AGENTS), rng.paretovariate(1.6)))
    return out


def generate(config: SyntheticConfig, cipher: AccountCipher) -> Synthetic:
    b = _Builder(config, cipher)
    rng, c = b.rng, config
    buyers = _buyers(b)
    cumulative = list(itertools.accumulate(x.weight for x in buyers))  # one bisect per draw, not a sum
    offset = timedelta(minutes=c.tz_offset_minutes)
    local0 = c.start + offset  # the first local midnight, written as a wall-clock reading
    hours = [local0 + timedelta(hours=h) for h in range(24 * c.days)]
    rates = [local_hour_weight(h.weekday(), h.hour, c.peak_factor) for h in hours]
    scale = c.orders_per_day * c.days / sum(rates)
    for hour, rate in zip(hours, rates, strict=True):
        for _ in range(_poisson(rng, rate * scale)):
            buyer = rng.choices(buyers, cum_weights=cumulative)[0]
            at = hour - offset + timedelta(seconds=rng.uniform(0, 3_600))
            client, agent = buyer.network, buyer.agent
            if rng.random() < 0.04:  # on the phone's network for once
                client = _ip(rng)
            if rng.random() < 0.01:  # a new phone: from now on, its client
                buyer.agent = agent = rng.choice(AGENTS) + f" build/{rng.randint(1, 99)}"
            b.order(buyer.wallet, rng.choice(buyer.accounts), at, client, agent)
            if rng.random() < 0.06:  # a second pack a few minutes later
                later = at + timedelta(seconds=rng.uniform(60, 400))
                b.order(buyer.wallet, rng.choice(buyer.accounts), later, client, agent)
    b.orders.sort(key=lambda o: o["paid_at"])
    # Fraud bursts, after the first week (the victims have a history by then).
    bursts: list[Burst] = []
    fraud: dict[str, int] = {}
    first_seen: dict[str, datetime] = {}
    used: dict[str, list[tuple[datetime, str]]] = {}  # wallet -> (when, account hash) of its orders
    for o in b.orders:
        first_seen.setdefault(o["buyer"], o["paid_at"])
        used.setdefault(o["buyer"], []).append((o["paid_at"], o["account_hash"]))
    for n in range(c.bursts):
        kind = "stolen_wallet" if n % 2 == 0 else "stolen_account"
        start = c.start + timedelta(
            days=7 + (c.days - 8) * (n + 0.5) / max(c.bursts, 1), hours=rng.uniform(0, 20)
        )
        known = [x for x in buyers if first_seen.get(x.wallet, start) < start - timedelta(days=2)]
        victim = rng.choice(known or buyers)
        client, agent = _ip(rng), f"python-httpx/0.{rng.randint(20, 28)}"
        size = rng.randint(*c.burst_size)
        before = {h for when, h in used.get(victim.wallet, []) if when < start}
        account = next(
            (a for a in victim.accounts if b._hash(b._hashes, "account", a.casefold()) in before), None
        )
        account = account or victim.accounts[0]
        ids = []
        at = start
        for _ in range(size):
            at += timedelta(seconds=rng.uniform(20, 90))
            if kind == "stolen_wallet":
                ids.append(
                    b.order(
                        victim.wallet, f"uid-{rng.randint(10**7, 10**8 - 1)}", at, client, agent, fraud=True
                    )
                )
            else:  # a game account the victim has topped up before
                ids.append(b.order(_address(rng), account, at, client, agent, fraud=True))
        bursts.append(Burst(n, kind, tuple(ids), start))
        fraud.update({i: n for i in ids})
    b.orders.sort(key=lambda o: o["paid_at"])
    return Synthetic(config, b.orders, b.events, b.signals, bursts, fraud, b.attempts)


def _chunks(rows: list[dict[str, Any]], size: int = 2_000) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def load(session: Session, data: Synthetic) -> None:
    """Insert the synthetic orders, their events, provider calls and signals (bulk ``INSERT``; the caller
    commits), and add the orders to the analytics rollups (set-based: they bypass ``transition``)."""
    for chunk in _chunks(data.orders):
        session.execute(insert(Order), chunk)
    for chunk in _chunks(data.events):
        session.execute(insert(OrderEvent), chunk)
    for chunk in _chunks(data.attempts):
        session.execute(insert(ProviderAttempt), chunk)
    for chunk in _chunks(data.signals):
        session.execute(insert(RequestSignal), chunk)
    rollups.rebuild(session.connection())

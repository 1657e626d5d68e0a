"""The CPU per order of the oracle's ledger work alone: no chain, no provider, no other process.

    python -m bench.ledger_stages [--batches 20] [--batch 100]

Each batch of orders goes through the stages' own ledger functions on one SQLite file: quoted -> paid
(an ``order.paid`` event), the risk stage (``oracles.risk.risk_check_paid``), the claim and
``submitting`` (a provider attempt opened), the provider's answer ``succeeded`` (``order.fulfilled``),
the proof's ``proof_pending`` and ``settled`` (``order.settled``), one merchant endpoint subscribed to
the three events. Prints the process CPU (user + system) per order of each stage; checks every order
settled and every event got its delivery. Run it under ``flock /work/bench.lock`` like any timing run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderState, WebhookDelivery, WebhookEndpoint
from cardless.ledger.models import utcnow
from cardless.ledger.store import candidates, claim_many
from cardless.ledger.transitions import transition
from oracles.risk import RiskPolicy, risk_check_paid
from tests.support.db import migrated, sqlite_url
from tests.support.orders import order_row

S = OrderState
MERCHANT = "0x" + "33" * 20


def _paid(sessions: sessionmaker[Session], batch: int) -> None:
    with sessions.begin() as session:
        now = utcnow()
        for row in candidates(session, [S.QUOTED], now=now, limit=batch):
            transition(session, row, S.PAID, "OrderPaid", paid_tx="0x" + "ab" * 32, paid_block=7, paid_at=now)


def _submit(sessions: sessionmaker[Session], batch: int) -> None:
    with sessions.begin() as session:
        now = utcnow()
        rows = candidates(session, [S.RISK_CHECKED], now=now, limit=batch)
        ids = [row.id for row in rows]
        taken = claim_many(session, ids, "bench", states=[S.RISK_CHECKED], ttl=timedelta(seconds=10), now=now)
        for row in rows:
            if row.id in taken:
                transition(
                    session,
                    row,
                    S.SUBMITTING,
                    "submitted",
                    detail={"provider": "sim"},
                    attempts=row.attempts + 1,
                )


def _answer(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        rows = session.scalars(select(Order).where(Order.state == S.SUBMITTING.value).with_for_update()).all()
        for row in rows:
            transition(
                session,
                row,
                S.SUCCEEDED,
                "sim credited the account",
                provider_ref="ref",
                receipt={"version": 1, "order_id": row.id},
                receipt_hash="0x" + "cd" * 32,
                fulfilled_at=int(time.time()),
                last_error=None,
            )
        session.flush()
        session.execute(
            update(Order)
            .where(Order.id.in_([row.id for row in rows]))
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )


def _proof(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for row in candidates(session, [S.SUCCEEDED], now=utcnow()):
            transition(
                session,
                row,
                S.PROOF_PENDING,
                "fulfilment proof signed",
                fulfilled_at=row.fulfilled_at,
                proof_signature="0x" + "ee" * 65,
            )


def _settle(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for row in candidates(session, [S.PROOF_PENDING], now=utcnow()):
            transition(session, row, S.SETTLED, "Settled in block 9", settle_tx="0x" + "ef" * 32)


def run(batches: int, batch: int) -> dict[str, float]:
    """Seconds of process CPU per stage over ``batches`` x ``batch`` orders."""
    spent: dict[str, float] = {}

    def timed(name: str, stage: Callable[[], object]) -> None:
        start = time.process_time()
        stage()
        spent[name] = spent.get(name, 0.0) + time.process_time() - start

    policy = RiskPolicy()
    with (
        tempfile.TemporaryDirectory(prefix="ledger-stages-") as directory,
        migrated(sqlite_url(Path(directory))) as sessions,
    ):
        with sessions.begin() as session:
            session.add(
                WebhookEndpoint(
                    id="we_" + "1" * 24,
                    merchant=MERCHANT,
                    url="http://127.0.0.1:9/hook",
                    event_types=["order.paid", "order.fulfilled", "order.settled"],
                    secret_ciphertext=b"x",
                )
            )
        for k in range(batches):
            with sessions.begin() as session:
                for i in range(batch):
                    session.add(order_row(state=S.QUOTED, merchant=MERCHANT, buyer=f"0x{k * batch + i:040x}"))
            timed("paid", lambda: _paid(sessions, batch))
            timed("risk", lambda: risk_check_paid(sessions, policy))
            timed("submit", lambda: _submit(sessions, batch))
            timed("answer", lambda: _answer(sessions))
            timed("proof", lambda: _proof(sessions))
            timed("settle", lambda: _settle(sessions))
        with sessions() as session:
            settled = session.scalar(select(func.count()).where(Order.state == S.SETTLED.value))
            deliveries = session.scalar(select(func.count()).select_from(WebhookDelivery))
    orders = batches * batch
    if settled != orders or deliveries != 3 * orders:
        raise SystemExit(
            f"expected {orders} settled orders and {3 * orders} deliveries: {settled}, {deliveries}"
        )
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    spent = run(args.batches, args.batch)
    orders = args.batches * args.batch
    per = {name: 1000 * seconds / orders for name, seconds in spent.items()}
    print(f"orders={orders} batch={args.batch} ledger CPU ms/order total={sum(per.values()):.3f} ", end="")
    print(" ".join(f"{name}={ms:.3f}" for name, ms in per.items()))


if __name__ == "__main__":
    main()

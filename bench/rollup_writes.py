"""CPU per order of the ledger write path with and without the analytics rollups (issue 14).

N orders (default 600) moved by ``transition`` through paid, risk-checked, submitting, succeeded and a
proof that moves ``fulfilled_at`` back, 50 orders per transaction (as the oracle's stages commit), three
times with the rollups and three times with ``record`` replaced by a no-op; this process's CPU per order
for the five moves (a PostgreSQL server's own CPU is not in it). PostgreSQL needs CARDLESS_TEST_PG_URL.

    PYTHONPATH=. python -m bench.rollup_writes sqlite|pg [N]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import cardless.ledger.transitions as tr
from cardless.ledger import Order, OrderState, create_engine_for, migrate, session_factory
from tests.support.orders import order_row
from tests.support.postgres import PostgresServer

S = OrderState
BATCH = 50
_real = getattr(tr, "record_rollups")  # noqa: B009 - not exported: swapped below


def _off(*args: Any) -> None:
    del args


def run(url: str, n: int, rollups: bool, seed: int) -> float:
    """This process's CPU milliseconds per order for the five moves."""
    setattr(tr, "record_rollups", _real if rollups else _off)  # noqa: B010
    engine = create_engine_for(url)
    migrate(engine)
    sessions = session_factory(engine)
    rng = random.Random(seed)
    with sessions.begin() as session:
        rows = [order_row(state=S.QUOTED, sku=rng.choice(["a", "b", "c"])) for _ in range(n)]
        session.add_all(rows)
    ids = [o.id for o in rows]
    t0 = datetime.now(UTC)
    started = time.process_time()
    for stage in range(5):
        for i in range(0, n, BATCH):
            with sessions.begin() as session:
                for order_id in ids[i : i + BATCH]:
                    o = session.get(Order, order_id)
                    assert o is not None
                    if stage == 0:
                        paid = t0 + timedelta(seconds=rng.randrange(600))
                        tr.transition(session, o, S.PAID, "paid", paid_at=paid)
                    elif stage == 1:
                        tr.transition(session, o, S.RISK_CHECKED, "allowed")
                    elif stage == 2:
                        tr.transition(session, o, S.SUBMITTING, "submit", detail={"provider": "alpha"})
                    elif stage == 3:
                        assert o.paid_at is not None
                        done = int(o.paid_at.replace(tzinfo=UTC).timestamp()) + 5
                        tr.transition(session, o, S.SUCCEEDED, "credited", fulfilled_at=done)
                    else:
                        assert o.fulfilled_at is not None
                        tr.transition(session, o, S.PROOF_PENDING, "proof", fulfilled_at=o.fulfilled_at - 1)
    cpu = time.process_time() - started
    engine.dispose()
    setattr(tr, "record_rollups", _real)  # noqa: B010
    return cpu / n * 1_000


def main(backend: str, n: int) -> dict[str, list[float]]:
    result: dict[str, list[float]] = {"without": [], "with": []}
    for rep in range(3):
        for rollups in (False, True):
            label = "with" if rollups else "without"
            if backend == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
                result[label].append(run(url, n, rollups, rep))
            else:
                server = PostgresServer(os.environ["CARDLESS_TEST_PG_URL"])
                with server.database(migrated=False) as url:
                    result[label].append(run(url, n, rollups, rep))
    return result


if __name__ == "__main__":
    out = main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 600)
    print(sys.argv[1], "ms CPU per order (5 moves):", {k: [round(x, 3) for x in v] for k, v in out.items()},
          "load", os.getloadavg())  # fmt: skip

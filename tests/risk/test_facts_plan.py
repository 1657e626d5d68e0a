"""The facts statement runs under a generic plan on PostgreSQL: set once per transaction (a risk stage
decides a batch in one), gone with it, and the decisions are the same as under custom plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text

from cardless.ledger import OrderState, create_engine_for, session_factory
from cardless.ledger.risk import RiskEngine
from tests.support.orders import add_order
from tests.support.postgres import pg_url, postgres  # noqa: F401 - the fixtures

T = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
BUYER = "0x" + "ab" * 20


def test_generic_plan_once_per_transaction_same_decisions(pg_url: str) -> None:  # noqa: F811
    engine = create_engine_for(pg_url)
    sets: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("SET LOCAL plan_cache_mode"):
            sets.append(statement)

    sessions = session_factory(engine)
    risk = RiskEngine()
    try:
        with sessions.begin() as session:
            orders = [
                add_order(session, state=OrderState.PAID, buyer=BUYER, paid_at=T + timedelta(seconds=30 * i))
                for i in range(6)
            ]
            ids = [o.id for o in orders]

        def decide_all() -> list[tuple[str, list[str]]]:
            with sessions() as session:
                assert session.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"
                out = []
                for order_id in ids:
                    order = session.get(type(orders[0]), order_id)
                    assert order is not None
                    verdict, _ = risk.decide(session, order)
                    out.append((verdict.decision.value, sorted(r.rule for r in verdict.reasons)))
                assert session.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_generic_plan"
                session.rollback()
            return out

        first = decide_all()
        assert len(sets) == 1  # six decisions, one SET LOCAL
        second = decide_all()
        assert len(sets) == 2  # a new transaction sets it again
        assert first == second
        # Six orders in 2.5 minutes from a new wallet: counted right under the generic plan.
        assert first == [
            ("allow", []),
            ("allow", []),
            ("allow", ["burst_wallet"]),
            ("hold", ["burst_wallet", "new_wallet_orders"]),
            ("hold", ["burst_wallet", "new_wallet_orders", "wallet_velocity"]),
            ("hold", ["burst_wallet", "new_wallet_orders", "wallet_velocity"]),
        ]
        # The oracle's risk stage reads the six orders' facts in one statement: the same verdicts.
        with sessions() as session:
            rows = [session.get(type(orders[0]), order_id) for order_id in ids]
            together = risk.decide_many(session, rows)  # type: ignore[arg-type]
            session.rollback()
        assert [(v.decision.value, sorted(r.rule for r in v.reasons)) for v, _ in together] == first
    finally:
        engine.dispose()

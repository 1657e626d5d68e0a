"""``bench.ledger_stages`` runs its orders to ``settled`` with every event delivered, or says it did not."""

from __future__ import annotations

from bench.ledger_stages import run


def test_a_small_run_settles_every_order_and_times_every_stage() -> None:
    spent = run(2, 5)  # raises SystemExit unless 10 orders settled with 30 deliveries
    assert set(spent) == {"paid", "risk", "submit", "answer", "proof", "settle"}
    assert all(seconds > 0 for seconds in spent.values())

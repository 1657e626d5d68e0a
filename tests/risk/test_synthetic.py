"""The synthetic traffic: deterministic for a seed, and on its 30 days the risk engine stops every
injected fraud burst before any top-up while holding under 1 % of the normal orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardless.ledger.cipher import AccountCipher
from cardless.ledger.risk import Decision, RiskEngine
from cardless.ledger.risk.replay import replay
from cardless.ledger.synthetic import SyntheticConfig, generate, load, local_hour_weight
from tests.support.db import migrated, sqlite_url

CIPHER = AccountCipher(b"s" * 32)
SMALL = SyntheticConfig(orders_per_day=40)


def test_the_generator_is_deterministic_for_a_seed_and_labels_its_bursts() -> None:
    short = SyntheticConfig(days=10, orders_per_day=20, buyers=100, bursts=2)
    assert [o["id"] for o in generate(short, CIPHER).orders] == [
        o["id"] for o in generate(short, CIPHER).orders
    ]
    other = generate(SyntheticConfig(days=10, orders_per_day=20, buyers=100, bursts=2, seed=1), CIPHER)
    a = generate(SMALL, CIPHER)
    assert other.orders[0]["id"] != generate(short, CIPHER).orders[0]["id"]
    assert len(a.bursts) == 6 and {x.kind for x in a.bursts} == {"stolen_wallet", "stolen_account"}
    assert sum(len(x.order_ids) for x in a.bursts) == len(a.fraud)
    days = (a.orders[-1]["paid_at"] - a.orders[0]["paid_at"]).days
    assert 28 <= days <= 30 and 1_000 < len(a.orders) < 1_700
    # The weekend-evening peak is the busiest hour of the week in the model itself.
    weights = {(d, h): local_hour_weight(d, h, SMALL.peak_factor) for d in range(7) for h in range(24)}
    assert max(weights, key=weights.__getitem__)[0] in (5, 6)


@pytest.mark.slow
def test_every_injected_burst_is_stopped_and_few_normal_orders_are_held(tmp_path: Path) -> None:
    data = generate(SMALL, CIPHER)
    with migrated(sqlite_url(tmp_path)) as sessions:
        with sessions.begin() as session:
            load(session, data)
        with sessions() as session:
            report = replay(session, RiskEngine(), data.fraud)
    assert report.orders == len(data.orders)
    for burst in data.bursts:  # every order of every burst: held (or refunded), never topped up
        assert {report.decisions[i] for i in burst.order_ids} <= {Decision.HOLD, Decision.REFUND}, burst
    assert report.bursts_fully_stopped == report.bursts == 6
    assert report.false_hold_rate < 0.01, report.as_dict()

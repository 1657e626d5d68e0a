"""The analytics figures on the synthetic 30 days, on SQLite and on PostgreSQL: the same answers from
the same SQL, and the weekend-evening peak where the generator put it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import analytics
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.synthetic import Synthetic, SyntheticConfig, generate, load
from cardless.protocol import RefundReason
from tests.support.db import migrated, sqlite_url
from tests.support.postgres import BACKENDS, PostgresServer, postgres  # noqa: F401 - the fixture

CONFIG = SyntheticConfig(orders_per_day=40)
RANGE = analytics.Range(CONFIG.start, CONFIG.start + timedelta(days=CONFIG.days), tz_offset_minutes=480)


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return generate(CONFIG, AccountCipher(b"a" * 32))


@pytest.fixture(scope="module", params=BACKENDS)
def ledger(
    request: pytest.FixtureRequest, data: Synthetic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url_cm: Any = migrated(sqlite_url(Path(tmp_path_factory.mktemp("analytics"))))
        with url_cm as sessions:
            with sessions.begin() as session:
                load(session, data)
            yield sessions
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with server.database() as url, migrated(url) as sessions:
        with sessions.begin() as session:
            load(session, data)
        yield sessions


def figure(ledger: sessionmaker[Session], name: str, r: analytics.Range = RANGE) -> dict[str, Any]:
    with ledger() as session:
        return analytics.FIGURES[name](session, r)


def test_the_heatmap_peak_is_in_the_weekend_evening_window_in_local_time(
    ledger: sessionmaker[Session], data: Synthetic
) -> None:
    result = figure(ledger, "heatmap")
    peak = result["peak"]
    assert peak["weekday"] in (0, 6) and 19 <= peak["hour"] < 22, peak  # 0 = Sunday, 6 = Saturday
    assert sum(c["orders"] for c in result["cells"]) == len(data.orders)
    # Read in UTC the same orders peak eight hours earlier: the offset is applied, not ignored.
    utc = figure(ledger, "heatmap", analytics.Range(RANGE.since, RANGE.until))["peak"]
    assert (utc["hour"] - peak["hour"]) % 24 == 16


def test_daily_volume_per_sku_adds_up_to_the_orders(ledger: sessionmaker[Session], data: Synthetic) -> None:
    rows = figure(ledger, "sku_daily")["rows"]
    assert sum(r["orders"] for r in rows) == len(data.orders)
    assert sum(int(r["amount"]) for r in rows) == sum(o["amount"] for o in data.orders)
    assert len({r["day"] for r in rows}) in (30, 31)


def test_repeat_rate_and_cohorts(ledger: sessionmaker[Session], data: Synthetic) -> None:
    per_buyer = Counter(o["buyer"] for o in data.orders)
    result = figure(ledger, "repeat")
    assert result["buyers"] == len(per_buyer)
    assert result["repeat_buyers"] == sum(n >= 2 for n in per_buyer.values())
    assert 0 < result["repeat_rate"] < 1
    rows = figure(ledger, "cohorts")["rows"]
    assert sum(r["buyers"] for r in rows if r["week"] == 0) == len(per_buyer)  # every buyer has one cohort
    assert all(r["week"] >= 0 for r in rows)
    # Exactly the cohort table counted by hand: a buyer's cohort is the week of its first order.
    start = int(RANGE.since.timestamp())
    weeks: dict[str, set[int]] = {}
    for o in data.orders:
        weeks.setdefault(o["buyer"], set()).add((int(o["paid_at"].timestamp()) - start) // 604_800)
    expected = Counter((min(w), wk - min(w)) for w in weeks.values() for wk in w)
    assert {(r["cohort"], r["week"]): r["buyers"] for r in rows} == expected


def test_time_to_fulfil_providers_and_refund_reasons(ledger: sessionmaker[Session], data: Synthetic) -> None:
    fulfilled = [o for o in data.orders if o["fulfilled_at"] is not None]
    result = figure(ledger, "fulfilment")
    assert result["orders"] == len(fulfilled) == sum(b["orders"] for b in result["histogram"])
    assert 0 < result["mean_seconds"] < 10
    providers = {p["provider"]: p for p in figure(ledger, "providers")["providers"]}
    assert set(providers) == {"alpha", "beta"}
    assert providers["alpha"]["success_rate"] > providers["beta"]["success_rate"]
    assert providers["alpha"]["mean_seconds"] < providers["beta"]["mean_seconds"]
    assert sum(p["succeeded"] for p in providers.values()) == len(fulfilled)
    reasons = {r["reason"]: r["orders"] for r in figure(ledger, "refunds")["reasons"]}
    assert reasons["risk_rejected"] == len(data.fraud)
    assert sum(reasons.values()) == sum(o["refund_reason"] is not None for o in data.orders)
    assert set(reasons) <= {x.name.lower() for x in RefundReason}


def test_a_merchant_sees_its_own_orders_only(ledger: sessionmaker[Session]) -> None:
    other = analytics.Range(RANGE.since, RANGE.until, merchant="0x" + "99" * 20)
    for name in ("heatmap", "sku_daily", "cohorts", "providers", "refunds"):
        result = figure(ledger, name, other)
        assert not any(v for v in result.values() if isinstance(v, list)), (name, result)
    assert figure(ledger, "repeat", other)["buyers"] == figure(ledger, "fulfilment", other)["orders"] == 0

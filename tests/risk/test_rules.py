"""Each risk rule on a migrated SQLite ledger: the engine gathers facts in SQL as of the order's payment
time, the pure rules decide, and the decision is stored with its reasons."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import Order, OrderState
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.risk import (
    ALL_MERCHANTS,
    Decision,
    RiskConfig,
    RiskDecision,
    RiskEngine,
    RiskListEntry,
    RiskRules,
    ScreeningList,
    VelocityLimit,
)
from cardless.ledger.risk.facts import gather, gather_many
from cardless.ledger.risk.rules import burst_z
from cardless.ledger.risk.signals import network_of, purge_signals, request_signal
from tests.support import orders as support_orders

S = OrderState
CIPHER = AccountCipher(b"r" * 32)
T = datetime(2026, 11, 2, 20, 0, tzinfo=UTC)
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
MERCHANT = "0x" + "33" * 20
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
QUIET = RiskRules(burst_min_orders=1000, new_network_points=0, new_agent_points=0, new_wallet_max_orders=1000)
"""Only the hard rules: each test switches on what it tests."""


@pytest.fixture
def session(migrated_db: sessionmaker[Session]) -> Iterator[Session]:
    with migrated_db() as session:
        yield session


def paid(
    session: Session,
    at: datetime = T,
    *,
    buyer: str = ALICE,
    account: str | None = "player-1",
    amount: int = 10_000_000,
    sku: str = "genshin-60",
    client: str | None = None,
    agent: str = "Mozilla/5.0 phone",
) -> Order:
    account_hash = CIPHER.account_hash(account) if account else None
    row = support_orders.add_order(
        session,
        state=S.PAID,
        buyer=buyer,
        token=USDC,
        amount=amount,
        sku=sku,
        merchant=MERCHANT,
        paid_at=at,
        account_hash=account_hash,
    )
    if client is not None:
        session.add(
            request_signal(
                CIPHER,
                order_id=row.id,
                buyer=buyer,
                account_hash=account_hash,
                client=client,
                user_agent=agent,
                at=at - timedelta(seconds=30),
            )
        )
        session.flush()
    return row


def decide(
    session: Session, order: Order, rules: RiskRules = QUIET, **engine: object
) -> tuple[Decision, set[str]]:
    risk = RiskEngine(defaults=rules, **engine)  # type: ignore[arg-type]
    verdict, row = risk.decide(session, order)
    session.flush()
    same_facts_in_one_statement(session, risk)
    assert row.decision == verdict.decision.value and row.score == verdict.score
    return verdict.decision, {r["rule"] for r in row.reasons}


def same_facts_in_one_statement(session: Session, risk: RiskEngine) -> None:
    """The oracle's risk stage reads a batch's facts in one statement (``gather_many``): for every paid
    order so far, each as of its payment time, it finds what ``gather`` finds for the order alone."""
    orders = list(session.execute(select(Order).where(Order.paid_at.is_not(None))).scalars())
    asked = [(o, risk.rules(session, o.merchant), o.paid_at) for o in orders]
    alone = [gather(session, o, r, at=t, screening=risk.screening) for o, r, t in asked]  # type: ignore[arg-type]
    assert gather_many(session, asked, screening=risk.screening) == alone  # type: ignore[arg-type]


def test_a_quiet_order_is_allowed_with_no_reasons(session: Session) -> None:
    assert decide(session, paid(session), RiskRules()) == (Decision.ALLOW, set())


def test_wallet_velocity_holds_the_order_over_the_limit_in_its_sliding_window(session: Session) -> None:
    rules = QUIET.model_copy(update={"wallet_velocity": (VelocityLimit(max_orders=3, seconds=600),)})
    paid(session, T - timedelta(seconds=601), account="other-0")  # outside the window
    for i in range(2):
        paid(session, T - timedelta(seconds=300 - i), account=f"other-{i + 1}")
    assert decide(session, paid(session, T, account="x"), rules)[0] is Decision.ALLOW  # 3 in 600 s
    paid(session, T + timedelta(seconds=1), buyer=BOB)  # another wallet does not count
    decision, why = decide(session, paid(session, T + timedelta(seconds=2), account="y"), rules)
    assert (decision, why) == (Decision.HOLD, {"wallet_velocity"})


def test_account_velocity_counts_the_keyed_hash_of_the_normalised_account(session: Session) -> None:
    rules = QUIET.model_copy(update={"account_velocity": (VelocityLimit(max_orders=2, seconds=600),)})
    paid(session, T - timedelta(seconds=60), buyer=BOB, account="Player-1")
    paid(session, T - timedelta(seconds=30), buyer="0x" + "c3" * 20, account="  PLAYER-1 ")
    decision, why = decide(session, paid(session, T, account="player-1"), rules)
    assert (decision, why) == (Decision.HOLD, {"account_velocity"})
    assert CIPHER.account_hash("Ｐlayer-1") == CIPHER.account_hash("player-1")  # NFKC: full-width P
    assert CIPHER.account_hash("player-1") != AccountCipher(b"s" * 32).account_hash("player-1")


def test_sku_velocity_and_its_refund_action(session: Session) -> None:
    rules = QUIET.model_copy(
        update={"sku_velocity": (VelocityLimit(max_orders=2, seconds=60),), "velocity_action": "refund"}
    )
    paid(session, T - timedelta(seconds=10), buyer=BOB, sku="rare")
    paid(session, T - timedelta(seconds=5), buyer="0x" + "c3" * 20, sku="rare")
    assert decide(session, paid(session, T, sku="common"), rules)[0] is Decision.ALLOW
    assert decide(session, paid(session, T, sku="rare"), rules) == (Decision.REFUND, {"sku_velocity"})


def test_amount_ceiling_per_token_whatever_the_address_case(session: Session) -> None:
    rules = QUIET.model_copy(update={"max_amount": {USDC.lower(): 50_000_000}})
    rules = RiskRules.model_validate(rules.model_dump())
    assert decide(session, paid(session, amount=50_000_000), rules)[0] is Decision.ALLOW
    assert decide(session, paid(session, amount=50_000_001), rules) == (Decision.REFUND, {"amount"})


def test_a_new_wallet_is_held_beyond_its_order_and_amount_limits(session: Session) -> None:
    rules = QUIET.model_copy(
        update={
            "new_wallet_max_orders": 2,
            "new_wallet_seconds": 86_400,
            "new_wallet_max_amount": {USDC.lower(): 100},
        }
    )
    rules = RiskRules.model_validate(rules.model_dump())
    assert decide(session, paid(session, T - timedelta(hours=2), amount=100), rules)[0] is Decision.ALLOW
    assert decide(session, paid(session, T - timedelta(hours=1), amount=100), rules)[0] is Decision.ALLOW
    assert decide(session, paid(session, T, amount=100), rules) == (Decision.HOLD, {"new_wallet_orders"})
    assert decide(session, paid(session, T, buyer=BOB, amount=101), rules) == (
        Decision.HOLD,
        {"new_wallet_amount"},
    )
    # A day later the wallet is no longer new.
    assert (
        decide(session, paid(session, T + timedelta(days=1, hours=1), amount=101), rules)[0] is Decision.ALLOW
    )


def test_block_lists_of_the_merchant_and_of_the_operator(session: Session) -> None:
    session.add(RiskListEntry(merchant=MERCHANT, kind="wallet", value=BOB))
    session.add(RiskListEntry(merchant=ALL_MERCHANTS, kind="account", value=CIPHER.account_hash("stolen-9")))
    session.add(RiskListEntry(merchant="0x" + "44" * 20, kind="wallet", value=ALICE))  # another merchant's
    session.flush()
    assert decide(session, paid(session, buyer=BOB)) == (Decision.REFUND, {"blocklist_wallet"})
    assert decide(session, paid(session, account="Stolen-9")) == (Decision.REFUND, {"blocklist_account"})
    assert decide(session, paid(session))[0] is Decision.ALLOW


def test_the_screening_list_file_is_read_at_start_and_reloaded_when_it_changes(
    session: Session, tmp_path: Path
) -> None:
    path = tmp_path / "screening.txt"
    path.write_text(f"# sanctioned\n{BOB.upper().replace('0X', '0x')}\n")
    screening = ScreeningList(path, check_every=0)
    assert decide(session, paid(session, buyer=BOB), screening=screening) == (Decision.REFUND, {"screening"})
    assert decide(session, paid(session), screening=screening)[0] is Decision.ALLOW
    import os

    path.write_text(f"{ALICE}\n")
    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    assert decide(session, paid(session), screening=screening)[1] == {"screening"}
    path.write_text("not an address\n")
    os.utime(path, (2, 2))
    assert ALICE in screening  # a malformed file keeps the last good list
    with pytest.raises(ValueError, match="line 1"):
        ScreeningList(path)


def test_a_burst_scores_by_its_z_against_the_wallets_own_baseline(session: Session) -> None:
    rules = QUIET.model_copy(update={"burst_points": 60, "burst_min_orders": 3})
    for day in range(1, 11):  # a regular: one order a day
        paid(session, T - timedelta(days=day), account=f"a{day}")
    assert decide(session, paid(session, T - timedelta(minutes=10)), rules)[0] is Decision.ALLOW
    assert decide(session, paid(session, T - timedelta(minutes=5)), rules)[0] is Decision.ALLOW
    decision, why = decide(session, paid(session, T), rules)
    assert (decision, why) == (Decision.HOLD, {"burst_wallet", "burst_account"})
    assert burst_z(3, 10, 900, 14 * 86_400) > 4 > burst_z(3, 5_000, 900, 14 * 86_400)


def test_a_known_wallet_from_a_new_network_and_client_scores_higher(session: Session) -> None:
    rules = QUIET.model_copy(update={"new_network_points": 30, "new_agent_points": 25, "hold_score": 50})
    paid(session, T - timedelta(days=3), client="203.0.113.7")
    # Same /24, same client: nothing new.
    assert (
        decide(session, paid(session, T - timedelta(hours=2), client="203.0.113.99"), rules)[0]
        is Decision.ALLOW
    )
    decision, why = decide(session, paid(session, T, client="198.51.100.4"), rules)
    assert (decision, why) == (Decision.ALLOW, {"new_network"})  # 30 < 50
    decision, why = decide(session, paid(session, T, client="192.0.2.1", agent="curl/8"), rules)
    assert (decision, why) == (Decision.HOLD, {"new_network", "new_agent"})
    # A brand-new wallet has no history: a "new network" means nothing for it.
    assert (
        decide(session, paid(session, T, buyer=BOB, account="b", client="192.0.2.1", agent="x"), rules)[1]
        == set()
    )


def test_networks_are_v4_slash_24_and_v6_slash_48_and_signals_are_purged(session: Session) -> None:
    assert network_of("203.0.113.7") == network_of("203.0.113.250") == "203.0.113.0/24"
    assert network_of("::ffff:203.0.113.7") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2::1") == network_of("2001:db8:1:ffff::9") == "2001:db8:1::/48"
    old = paid(session, T - timedelta(days=40), client="203.0.113.7")
    new = paid(session, T, client="203.0.113.7")
    signals = {s.order_id: s for s in session.execute(select(RiskDecision)).scalars()}
    assert not signals
    from cardless.ledger.risk import RequestSignal

    assert "203.0.113" not in (session.get(RequestSignal, new.id).network_hash or "")  # type: ignore[union-attr]
    assert purge_signals(session, timedelta(days=30), now=T) == 1
    assert session.get(RequestSignal, old.id) is None and session.get(RequestSignal, new.id) is not None


def test_per_merchant_rules_override_the_defaults(session: Session) -> None:
    session.add(RiskConfig(merchant=MERCHANT, rules={"max_amount": {USDC.lower(): 5}}))
    session.flush()
    decision, why = decide(session, paid(session, amount=6))
    assert (decision, why) == (Decision.REFUND, {"amount"})
    other = support_orders.add_order(
        session, state=S.PAID, token=USDC, amount=6, paid_at=T, merchant="0x" + "44" * 20
    )
    assert decide(session, other)[0] is Decision.ALLOW

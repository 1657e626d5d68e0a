"""A quote's rows are written from plain column values (the ledger's ``new_order_values`` and
``request_signal_values``), not from ORM objects: they must be exactly what the ledger's ORM constructors
(``cardless.ledger.store.new_order_row``, ``cardless.ledger.risk.signals.request_signal``) would have
the database store, column for column, and the gateway's INSERTs on the sqlite3 connection must store
what SQLAlchemy's Core INSERTs store."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import make_url

from cardless import protocol
from cardless.ledger import create_engine_for, migrate, session_factory
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, OrderEvent
from cardless.ledger.risk.models import RequestSignal
from cardless.ledger.risk.signals import MAX_KEPT_HASHES as _MAX_HASHES
from cardless.ledger.risk.signals import request_signal
from cardless.ledger.risk.signals import request_signal_values as _signal_values
from cardless.ledger.store import new_order_row
from cardless.ledger.store import new_order_values as _order_values
from gateway.services import _writes
from gateway.services.quotes import _SQLITE_INSERTS, QuoteService
from tests.support.postgres import sqlite_url

CIPHER = AccountCipher(bytes(range(32)))
ADDRESSES = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address("0x" + b.hex()))
CLIENTS = st.sampled_from(["127.0.0.1", "203.0.113.9", "2001:db8::1", "::ffff:198.51.100.7", "testclient"])


def _column_values(obj: object) -> dict[str, Any]:
    """The columns set on a new ORM object, by column name; the others take their column defaults."""
    state = sa_inspect(obj)
    return {a.columns[0].key: state.dict[a.key] for a in state.mapper.column_attrs if a.key in state.dict}


@settings(max_examples=50, deadline=None)
@given(
    buyer=ADDRESSES,
    merchant=ADDRESSES,
    token=ADDRESSES,
    escrow=ADDRESSES,
    amount=st.integers(1, protocol.MAX_AMOUNT),
    fee_bps=st.integers(0, protocol.MAX_BPS),
    expiry=st.integers(0, 2**40),
    chain_id=st.integers(1, 2**63 - 1),
    providers=st.lists(st.sampled_from(["simulator", "simulator-md5", "acme"]), min_size=1, max_size=3),
    reason=st.text(max_size=80),
    account=st.text(min_size=1, max_size=40),
)
def test_the_order_row_and_its_event_are_new_order_rows(
    buyer, merchant, token, escrow, amount, fee_bps, expiry, chain_id, providers, reason, account
) -> None:
    order = protocol.Order(
        order_id=secrets.token_bytes(32),
        buyer=buyer,
        merchant=merchant,
        token=token,
        amount=amount,
        fee_bps=fee_bps,
        quote_expiry=expiry,
        fulfilment_deadline=expiry + 3600,
        sku_hash=secrets.token_bytes(32),
        account_commitment=secrets.token_bytes(32),
    )
    domain = protocol.EscrowDomain(chain_id=chain_id, verifying_contract=escrow)
    terms = {
        "domain": domain,
        "sku": "genshin-60",
        "providers": providers,
        "account_ciphertext": CIPHER.encrypt(account, "0x" + order.order_id.hex()),
        "quote_signer": merchant,
        "quote_signature": secrets.token_bytes(65),
        "reason": reason,
    }
    account_hash = CIPHER.account_hash(account)
    row, event = _order_values(order, **terms, account_hash=account_hash)

    expected = new_order_row(order, **terms, account_hash=account_hash)
    assert row == _column_values(expected)
    (first,) = expected.events
    assert event == {**_column_values(first), "order_id": expected.id}


@given(client=CLIENTS, user_agent=st.text(max_size=700), buyer=ADDRESSES)
def test_the_signal_row_is_request_signals(client: str, user_agent: str, buyer: str) -> None:
    at = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    terms = {
        "order_id": "0x" + secrets.token_hex(32),
        "buyer": buyer,
        "account_hash": CIPHER.account_hash("123456789"),
        "client": client,
        "user_agent": user_agent,
        "at": at,
    }
    expected = _column_values(request_signal(CIPHER, **terms))
    assert _signal_values(CIPHER, **terms) == expected
    hashes: dict[tuple[str, str], str] = {}
    for _ in range(2):  # computed, then kept
        assert _signal_values(CIPHER, **terms, hashes=hashes) == expected
    assert len(hashes) == 2
    unstamped = {k: v for k, v in terms.items() if k != "at"}
    before = datetime.now(UTC)
    stamped = _signal_values(CIPHER, **unstamped)["seen_at"]
    assert before <= stamped <= datetime.now(UTC)


def test_the_kept_signal_hashes_are_bounded() -> None:
    hashes: dict[tuple[str, str], str] = {}
    terms: dict[str, Any] = {"order_id": "0x" + "ab" * 32, "buyer": "0x" + "11" * 20, "account_hash": None}
    for n in range(_MAX_HASHES + 10):
        client = f"10.{n // 256 % 256}.{n % 256}.1"
        _signal_values(CIPHER, **terms, client=client, user_agent="ua", hashes=hashes)
        assert len(hashes) <= _MAX_HASHES
    long_agent = "x" * 5000  # kept by its first 512 characters, the ones hashed
    values = _signal_values(CIPHER, **terms, client="10.0.0.1", user_agent=long_agent, hashes=hashes)
    assert values["agent_hash"] == CIPHER.keyed_hash("agent", "x" * 512)
    assert all(len(given) <= 512 for _, given in hashes)


def test_the_sqlite_insert_writes_what_the_core_insert_writes(tmp_path: Path) -> None:
    """The quote's INSERTs on the sqlite3 connection (the event loop's way) store, column for column, what
    SQLAlchemy's Core INSERTs store (the worker thread's way and PostgreSQL's): the same text for a time,
    JSON, a uint256 and bytes, and the columns' defaults (times to the microsecond, within the test)."""
    order = protocol.Order(
        order_id=secrets.token_bytes(32),
        buyer=to_checksum_address("0x" + "11" * 20),
        merchant=to_checksum_address("0x" + "22" * 20),
        token=to_checksum_address("0x" + "33" * 20),
        amount=protocol.MAX_AMOUNT,
        fee_bps=250,
        quote_expiry=2_000_000_000,
        fulfilment_deadline=2_000_003_600,
        sku_hash=secrets.token_bytes(32),
        account_commitment=secrets.token_bytes(32),
    )
    order_hex = "0x" + order.order_id.hex()
    row, event = _order_values(
        order,
        domain=protocol.EscrowDomain(
            chain_id=31337, verifying_contract=to_checksum_address("0x" + "44" * 20)
        ),
        sku="genshin-60",
        providers=["simulator", "simulator-md5"],
        account_ciphertext=CIPHER.encrypt("123456789", order_hex),
        quote_signer=to_checksum_address("0x" + "55" * 20),
        quote_signature=secrets.token_bytes(65),
        reason="quote issued; account validated by simulator",
        account_hash=CIPHER.account_hash("123456789"),
    )
    signal = _signal_values(
        CIPHER, order_id=order_hex, buyer=order.buyer, account_hash=None, client="10.1.2.3", user_agent="ua ü"
    )
    stored: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    columns = {
        model.__tablename__: model.__table__.columns.keys() for model in (Order, OrderEvent, RequestSignal)
    }
    started = datetime.now(UTC).replace(tzinfo=None)
    for way in ("sqlite3", "core"):
        url = sqlite_url(tmp_path / way)
        engine = create_engine_for(url)
        migrate(engine)
        sessions = session_factory(engine)
        try:
            if way == "sqlite3":
                raw = _SQLITE_INSERTS.writer(sessions, row, event, signal)
                assert raw is not None

                def core_write(connection: Any) -> None:
                    raise AssertionError("the Core INSERTs ran on the loop's way")

                assert _writes.try_write(sessions, core_write, raw=raw) is _writes.Attempt.DONE
            else:
                with engine.begin() as connection:
                    QuoteService._insert(row, event, signal, connection)
        finally:
            engine.dispose()
        with sqlite3.connect(str(make_url(url).database)) as connection:
            stored[way] = {
                table: list(connection.execute(f"SELECT {', '.join(names)} FROM {table}"))
                for table, names in columns.items()
            }
    finished = datetime.now(UTC).replace(tzinfo=None)
    defaulted = {"orders": ("created_at", "updated_at"), "order_events": ("at",)}
    for table in ("orders", "order_events", "risk_signals"):
        (ours,), (core,) = stored["sqlite3"][table], stored["core"][table]
        for name, mine, theirs in zip(columns[table], ours, core, strict=True):
            if name in defaulted.get(table, ()):
                # the same text format, each the time of its own INSERT
                for text in (mine, theirs):
                    assert started <= datetime.fromisoformat(text) <= finished, (table, name, text)
                assert len(mine) == len(theirs)
            else:
                assert mine == theirs, (table, name)
    assert stored["sqlite3"]["risk_signals"] == stored["core"]["risk_signals"]


def test_the_sqlite_insert_declines_other_databases() -> None:
    engine = create_engine_for(_postgres_like_url())
    try:
        assert _SQLITE_INSERTS.writer(session_factory(engine), {"id": "x"}, {}, None) is None
    finally:
        engine.dispose()


def _postgres_like_url() -> str:
    return "postgresql+psycopg://nobody:nothing@127.0.0.1:1/none"  # never connected to

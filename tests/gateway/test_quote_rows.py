"""A quote's rows are written from plain column values (``gateway.services.quotes._order_values`` and
``_signal_values``), not from ORM objects: they must be exactly what the ledger's own constructors
(``cardless.ledger.store.new_order_row``, ``cardless.ledger.risk.signals.request_signal``) would have
the database store, column for column."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from cardless import protocol
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.risk.signals import request_signal
from cardless.ledger.store import new_order_row
from gateway.services.quotes import _column_values, _order_values, _signal_values

CIPHER = AccountCipher(bytes(range(32)))
ADDRESSES = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address("0x" + b.hex()))
CLIENTS = st.sampled_from(["127.0.0.1", "203.0.113.9", "2001:db8::1", "::ffff:198.51.100.7", "testclient"])


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

    expected = new_order_row(order, **terms)
    expected.account_hash = account_hash
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
    assert _signal_values(CIPHER, **terms) == _column_values(request_signal(CIPHER, **terms))
    unstamped = {k: v for k, v in terms.items() if k != "at"}
    before = datetime.now(UTC)
    stamped = _signal_values(CIPHER, **unstamped)["seen_at"]
    assert before <= stamped <= datetime.now(UTC)

"""The audit of a real escrow history (tests/audit/conftest.py) read over HTTP JSON-RPC: everything that
happened is counted, proved and reconciled, and an honest history has no violation."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from cardless.audit import Auditor, ChainReader
from cardless.protocol import NATIVE_TOKEN
from tests.audit.conftest import History

pytestmark = pytest.mark.xdist_group("audit")


def _audit(history: History, **kwargs: object) -> tuple[Auditor, dict[str, object]]:
    reader = ChainReader(history.w3, page_blocks=int(kwargs.pop("page_blocks", 2_000)))  # type: ignore[call-overload]
    auditor = Auditor(reader, history.escrow, **kwargs)  # type: ignore[arg-type]
    report = auditor.run(0, history.w3.eth.block_number)
    return auditor, report.as_json()


def test_an_honest_history_has_no_violation_and_its_totals(history: History) -> None:
    _, report = _audit(history)
    assert report["violations"] == []
    assert report["unverified"] == []
    assert (report["orders"], report["settled"], report["refunded"], report["reclaimed"], report["open"]) == (
        14,
        9,
        2,
        1,
        2,
    )
    assert report["reclaimable_orders"] == ["0x" + history.open_past_deadline.order_id.hex()]
    usdc = history.env.usdc.address
    assert report["surplus"] == {usdc: str(history.surplus)}
    assert NATIVE_TOKEN not in report["surplus"]
    assert report["protocol_version"] == "2"
    assert report["tokens"][usdc]["skimmed"] == str(history.skimmed)
    admin = report["admin"]
    assert admin["threshold"] == 2 and admin["pending"] == {}
    assert {s for s, on in admin["oracle_signers"].items() if on} == {
        history.new_oracle.address,
        history.second_oracle.address,
    }
    assert report["rpc"]["calls"] > 0


def test_the_fast_quote_digest_is_the_protocols(history: History) -> None:
    from cardless.audit.auditor import _QuoteDigests
    from cardless.protocol import EscrowDomain, quote_typed_data, sign

    domain = EscrowDomain(history.w3.eth.chain_id, history.escrow)
    quotes = _QuoteDigests(domain)
    orders = [history.settled_single, history.native, history.open_in_time]
    for order in orders:
        message = quote_typed_data(domain, order)
        assert quotes.digest(order) == keccak(b"\x19" + message.version + message.header + message.body)
    assert quotes.trusted is True
    key = history.env.quote_key
    signature = sign(key.key, quote_typed_data(domain, orders[0]))
    assert quotes.recovers(orders[0], signature, key.address)
    assert not quotes.recovers(orders[1], signature, key.address)  # another order's quote
    assert not quotes.recovers(orders[0], signature[:64], key.address)  # not 65 bytes: EIP-1271's path


def test_balances_reconciled_every_n_blocks(history: History) -> None:
    _, report = _audit(history, balance_every=10)
    assert report["violations"] == []
    blocks = sorted({c["block"] for c in report["balance_checks"]})
    latest = history.w3.eth.block_number
    assert blocks == [*range(9, latest, 10), latest]
    usdc = history.env.usdc.address
    (last,) = [c for c in report["balance_checks"] if c["block"] == latest and c["token"] == usdc]
    assert int(last["balance"]) - int(last["owed"]) == history.surplus

"""Typed ids: hex as stored and served, bytes on the wire; a malformed value names its field."""

from __future__ import annotations

import pytest

from cardless import protocol


def test_order_id_round_trips_from_hex() -> None:
    raw = bytes(range(32))
    assert protocol.order_id_from_hex("0x" + raw.hex()) == raw
    assert protocol.order_id_from_hex("0X" + raw.hex().upper()) == raw


@pytest.mark.parametrize(
    "value",
    [None, "", "0x", "0x" + "ab" * 31, "0x" + "ab" * 33, "ab" * 33, "0x" + "zz" * 32, 12],
)
def test_malformed_order_id_is_a_protocol_error_naming_the_field(value: object) -> None:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.order_id_from_hex(value)  # type: ignore[arg-type]
    assert caught.value.field == "order_id"


def test_hash32_names_the_field_it_was_given() -> None:
    with pytest.raises(protocol.ProtocolError, match="receipt_hash"):
        protocol.hash32_from_hex("receipt_hash", "0x1234")
    assert protocol.hash32_from_hex("receipt_hash", "0x" + "00" * 32) == bytes(32)

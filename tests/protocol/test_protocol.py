"""cardless.protocol against the escrow: every digest the Python side signs is the one the contract checks.

Three groups:

- encoding equivalence: the Python struct hashes and digests equal the contract's views for arbitrary
  values (Hypothesis), and signatures made from them are accepted by real pay/settle/settleBatch/refund;
- pure unit tests of the module: validation names the field at fault, receipt hashing, commitments,
  sign/recover;
- docs/protocol.md: its Python verification recipe is executed as printed (no ``oracles`` import)
  against real settlements, and its worked examples are pinned.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardless.protocol import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    MAX_AMOUNT,
    MAX_BPS,
    NATIVE_TOKEN,
    EscrowDomain,
    Fulfilment,
    Order,
    OrderStatus,
    RefundReason,
    account_commitment,
    batch_digest,
    batch_typed_data,
    fulfilment_digest,
    fulfilment_typed_data,
    order_struct_hash,
    quote_digest,
    quote_typed_data,
    receipt_hash,
    recover_signer,
    refund_digest,
    refund_typed_data,
    sign,
    sign_digest,
)
from cardless.protocol._exceptions import ProtocolError
from tests.contracts.harness import TOKEN_UNIT, EscrowEnv

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
# The `_orders` mapping's storage slot, as documented in docs/protocol.md.
ORDERS_SLOT = 5

UINT48_MAX = 2**48 - 1
SECP256K1_HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
UINT256_MAX = 2**256 - 1

# A function-scoped fixture is fine here: the property tests only make eth_calls, which change nothing.
# At most 100 examples: each is an eth_call through py-evm (~30 ms), and an encoding either agrees with
# the contract's on random orders or fails within the first few dozen.
chain_property = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    deadline=None,
    max_examples=min(settings.default.max_examples, 100),
)

# ---------------------------------------------------------------------------------------------- strategies

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
words = st.binary(min_size=32, max_size=32)
uint48s = st.integers(min_value=0, max_value=UINT48_MAX) | st.sampled_from([0, 1, UINT48_MAX])


@st.composite
def orders(draw: st.DrawFn) -> Order:
    quote_expiry = draw(st.integers(min_value=0, max_value=UINT48_MAX - 1))
    deadline = draw(st.integers(min_value=quote_expiry + 1, max_value=UINT48_MAX))
    return Order(
        order_id=draw(words),
        buyer=draw(addresses),
        merchant=draw(addresses),
        token=draw(addresses | st.just(NATIVE_TOKEN)),
        amount=draw(st.integers(min_value=1, max_value=MAX_AMOUNT) | st.sampled_from([1, MAX_AMOUNT])),
        fee_bps=draw(st.integers(min_value=0, max_value=MAX_BPS)),
        quote_expiry=quote_expiry,
        fulfilment_deadline=deadline,
        sku_hash=draw(words),
        account_commitment=draw(words),
    )


fulfilments = st.builds(Fulfilment, order_id=words, receipt_hash=words, fulfilled_at=uint48s)


def valid_order_kwargs(**changes: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "order_id": b"\x01" * 32,
        "buyer": "0x" + "11" * 20,
        "merchant": "0x" + "22" * 20,
        "token": NATIVE_TOKEN,
        "amount": 10**18,
        "fee_bps": 250,
        "quote_expiry": 1_800_000_000,
        "fulfilment_deadline": 1_800_003_600,
        "sku_hash": keccak(b"sku:genshin-60"),
        "account_commitment": account_commitment("player#1", b"\x02" * 32),
    }
    kwargs.update(changes)
    return kwargs


def ethereum_digest(signable: Any) -> bytes:
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


# ------------------------------------------------------------------------------- encoding vs the contract


def test_domain_matches_eip5267_report(env: EscrowEnv) -> None:
    fields, name, version, chain_id, verifying_contract, salt, extensions = (
        env.escrow.functions.eip712Domain().call()
    )
    assert fields == b"\x0f"  # name, version, chainId, verifyingContract; no salt
    assert (name, version) == (DOMAIN_NAME, DOMAIN_VERSION) == ("CardlessEscrow", "2")
    assert chain_id == env.domain.chain_id == env.w3.eth.chain_id
    assert verifying_contract == env.domain.verifying_contract == env.escrow.address
    assert (salt, extensions) == (b"\x00" * 32, [])
    assert env.domain.as_dict() == {
        "name": name,
        "version": version,
        "chainId": chain_id,
        "verifyingContract": verifying_contract,
    }


@chain_property
@given(order=orders())
def test_order_struct_hash_equals_contract(env: EscrowEnv, order: Order) -> None:
    assert order_struct_hash(order) == bytes(env.escrow.functions.hashOrder(order.as_tuple()).call())


@chain_property
@given(order=orders())
def test_quote_digest_equals_contract(env: EscrowEnv, order: Order) -> None:
    expected = bytes(env.escrow.functions.quoteDigest(order.as_tuple()).call())
    assert quote_digest(env.domain, order) == expected
    assert ethereum_digest(quote_typed_data(env.domain, order)) == expected


@settings(max_examples=40)  # eth_account's signing is the slow side; the digest is also checked above
@given(
    order=orders(),
    secret=st.integers(min_value=1, max_value=SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big")),
    chain_id=st.integers(min_value=1, max_value=2**64),
    contract=addresses,
)
def test_the_quote_fast_path_signs_the_same_bytes_as_eth_account(
    order: Order, secret: bytes, chain_id: int, contract: str
) -> None:
    domain = EscrowDomain(chain_id, contract)
    typed = quote_typed_data(domain, order)
    assert quote_digest(domain, order) == ethereum_digest(typed)
    signature = sign_digest(secret, quote_digest(domain, order))
    assert signature == sign(secret, typed) == sign_digest("0x" + secret.hex(), quote_digest(domain, order))
    assert recover_signer(typed, signature) == Account.from_key(secret).address


@settings(max_examples=40)  # eth_account's encoder and signer are the slow side
@given(
    fulfilment_list=st.lists(fulfilments, min_size=1, max_size=5),
    order_id=words,
    reason=st.integers(min_value=0, max_value=2**16 - 1),
    secret=st.integers(min_value=1, max_value=SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big")),
    chain_id=st.integers(min_value=1, max_value=2**64),
    contract=addresses,
)
def test_the_proof_fast_paths_sign_the_same_bytes_as_eth_account(
    fulfilment_list: list[Fulfilment],
    order_id: bytes,
    reason: int,
    secret: bytes,
    chain_id: int,
    contract: str,
) -> None:
    """The oracle signs proofs from digests computed word by word; each equals eth_account's EIP-712
    digest of the same typed data, and the signature over it is the one eth_account makes."""
    domain = EscrowDomain(chain_id, contract)
    single = fulfilment_typed_data(domain, fulfilment_list[0])
    batch = batch_typed_data(domain, fulfilment_list)
    refund = refund_typed_data(domain, order_id, reason)
    assert fulfilment_digest(domain, fulfilment_list[0]) == ethereum_digest(single)
    assert batch_digest(domain, fulfilment_list) == ethereum_digest(batch)
    assert refund_digest(domain, order_id, reason) == ethereum_digest(refund)
    for typed, digest in (
        (single, fulfilment_digest(domain, fulfilment_list[0])),
        (batch, batch_digest(domain, fulfilment_list)),
        (refund, refund_digest(domain, order_id, reason)),
    ):
        assert sign_digest(secret, digest) == sign(secret, typed)


def test_the_fast_digests_refuse_what_the_typed_data_refuses() -> None:
    domain = EscrowDomain(1, "0x" + "11" * 20)
    with pytest.raises(ProtocolError, match="fulfilments"):
        batch_digest(domain, [])
    with pytest.raises(ProtocolError, match="order_id"):
        refund_digest(domain, b"\x01" * 31, 1)
    with pytest.raises(ProtocolError, match="reason_code"):
        refund_digest(domain, b"\x01" * 32, 2**16)


_REF_TYPES = ["bytes32", "address", "address", "uint256", "uint16", "uint48", "bytes32"]
"""The OrderRef's ABI types (docs/protocol.md), the last its details hash."""


def _details_hash(order: Order) -> bytes:
    """The OrderRef's details hash, as docs/protocol.md writes it, with eth_abi."""
    return keccak(
        abi_encode(
            ["address", "uint48", "bytes32", "bytes32"],
            [order.buyer, order.quote_expiry, order.sku_hash, order.account_commitment],
        )
    )


@given(order=orders())
def test_the_stored_order_digest_is_the_abi_encoding_of_its_ref(order: Order) -> None:
    """``Order.digest`` and ``order_struct_hash`` write the ABI words themselves; ``eth_abi`` agrees."""
    details = _details_hash(order)
    assert order.details_hash == details
    assert order.digest == keccak(abi_encode(_REF_TYPES, list(order.as_ref_tuple())))[:31]
    order_types = ["bytes32", "address", "address", "address", "uint256", "uint16", "uint48", "uint48"]
    order_types += ["bytes32", "bytes32"]
    type_hash = keccak(
        text="Order(bytes32 orderId,address buyer,address merchant,address token,uint256 amount,"
        "uint16 feeBps,uint48 quoteExpiry,uint48 fulfilmentDeadline,"
        "bytes32 skuHash,bytes32 accountCommitment)"
    )
    assert order_struct_hash(order) == keccak(type_hash + abi_encode(order_types, order.as_tuple()))


@chain_property
@given(order=orders())
def test_stored_order_digest_equals_contract(env: EscrowEnv, order: Order) -> None:
    expected = bytes(env.escrow.functions.orderDigest(order.as_tuple()).call())
    assert order.digest == expected
    # It is the OrderRef digest of docs/protocol.md, not the EIP-712 struct hash.
    details = _details_hash(order)
    assert order.details_hash == details
    assert order.as_ref_tuple()[-1] == details
    assert keccak(abi_encode(_REF_TYPES, list(order.as_ref_tuple())))[:31] == expected
    assert order_struct_hash(order)[:31] != expected


@chain_property
@given(fulfilment=fulfilments)
def test_fulfilment_digest_equals_contract(env: EscrowEnv, fulfilment: Fulfilment) -> None:
    expected = env.escrow.functions.fulfilmentDigest(fulfilment.order_id, fulfilment.as_tuple()).call()
    assert fulfilment_digest(env.domain, fulfilment) == bytes(expected)


@chain_property
@given(order_id=words, reason=st.integers(min_value=0, max_value=2**16 - 1))
def test_refund_digest_equals_contract(env: EscrowEnv, order_id: bytes, reason: int) -> None:
    expected = env.escrow.functions.refundDigest(order_id, reason).call()
    assert refund_digest(env.domain, order_id, reason) == bytes(expected)


def test_digests_are_bound_to_chain_and_contract(env: EscrowEnv) -> None:
    order = env.make_order()
    fulfilment = env.fulfilment(order)
    other_chain = EscrowDomain(env.domain.chain_id + 1, env.domain.verifying_contract)
    other_escrow = EscrowDomain(env.domain.chain_id, env.usdc.address)
    for domain in (other_chain, other_escrow):
        assert quote_digest(domain, order) != quote_digest(env.domain, order)
        assert fulfilment_digest(domain, fulfilment) != fulfilment_digest(env.domain, fulfilment)
        assert refund_digest(domain, order.order_id, 1) != refund_digest(env.domain, order.order_id, 1)


def test_order_record_slot_holds_status_and_digest(env: EscrowEnv) -> None:
    order = env.make_order()
    slot = int.from_bytes(keccak(abi_encode(["bytes32", "uint256"], [order.order_id, ORDERS_SLOT])), "big")
    assert bytes(env.w3.eth.get_storage_at(env.escrow.address, slot)) == b"\x00" * 32

    env.pay(order)
    word = bytes(env.w3.eth.get_storage_at(env.escrow.address, slot))
    assert word == bytes([OrderStatus.PAID]) + order.digest

    env.settle(order)
    word = bytes(env.w3.eth.get_storage_at(env.escrow.address, slot))
    assert word == bytes([OrderStatus.SETTLED]) + order.digest


def test_single_settle_attests_python_fulfilment_digest(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    fulfilment = env.fulfilment(order)
    receipt = env.settle(order, fulfilment=fulfilment)

    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert bytes(attested.args.digest) == fulfilment_digest(env.domain, fulfilment)
    assert (attested.args.signers, attested.args.orders) == ([env.oracle_key.address], 1)
    (settled,) = env.events(receipt, "OrderSettled")
    assert (bytes(settled.args.receiptHash), settled.args.fulfilledAt) == fulfilment.as_tuple()


def test_batch_digest_verified_by_settle_batch(env: EscrowEnv) -> None:
    # Mixed merchants and tokens, amounts whose fee rounds down.
    batch = [
        env.make_order(amount=10 * TOKEN_UNIT + 7, fee_bps=250),
        env.make_order(amount=3 * TOKEN_UNIT + 1, fee_bps=333, merchant=env.merchants[1].address),
        env.make_order(token=None, amount=10**15 + 9, fee_bps=1),
        env.make_order(token=env.usdt, amount=TOKEN_UNIT, fee_bps=0),
    ]
    for order in batch:
        env.pay(order)
    proofs = [env.fulfilment(order) for order in batch]

    receipt = env.settle_batch(batch, fulfilments=proofs)

    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert bytes(attested.args.digest) == batch_digest(env.domain, proofs)
    assert attested.args.orders == len(batch)
    assert all(env.status(order) == OrderStatus.SETTLED for order in batch)
    settled = env.events(receipt, "OrderSettled")
    assert [(bytes(e.args.orderId), bytes(e.args.receiptHash)) for e in settled] == [
        (p.order_id, p.receipt_hash) for p in proofs
    ]
    for order in batch:
        fee = order.amount * order.fee_bps // MAX_BPS
        assert order.fee == fee
        assert env.escrow_balance(order.merchant, order.token) >= order.amount - fee
    assert env.fee_balance(env.usdc.address) == sum(o.fee for o in batch[:2])
    assert env.fee_balance(NATIVE_TOKEN) == batch[2].fee == 10**11


def test_batch_signature_covers_calldata_order(env: EscrowEnv) -> None:
    batch = [env.make_order(), env.make_order()]
    for order in batch:
        env.pay(order)
    proofs = [env.fulfilment(order) for order in batch]
    swapped = env.oracle_sign(batch_typed_data(env.domain, proofs[::-1]))
    with env.reverts("InvalidSignature", env.oracle_key.address, batch_digest(env.domain, proofs)):
        env.settle_batch(batch, fulfilments=proofs, signature=swapped)


def test_single_fulfilment_signature_is_not_a_batch_of_one(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    proof = env.fulfilment(order)
    single = env.oracle_sign(fulfilment_typed_data(env.domain, proof))
    assert batch_digest(env.domain, [proof]) != fulfilment_digest(env.domain, proof)
    with env.reverts("InvalidSignature", env.oracle_key.address, batch_digest(env.domain, [proof])):
        env.settle_batch([order], fulfilments=[proof], signature=single)


def test_refund_signature_from_python_is_accepted(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    receipt = env.refund(order, RefundReason.OUT_OF_STOCK)
    assert env.status(order) == OrderStatus.REFUNDED
    (refunded,) = env.events(receipt, "OrderRefunded")
    assert (refunded.args.reasonCode, refunded.args.signers) == (3, [env.oracle_key.address])


def test_refund_signature_binds_reason_code(env: EscrowEnv) -> None:
    order = env.make_order()
    env.pay(order)
    signature = env.oracle_sign(refund_typed_data(env.domain, order.order_id, RefundReason.OPERATOR))
    call = env.escrow.functions.refund(
        order.as_tuple(), RefundReason.INVALID_ACCOUNT, [env.oracle_key.address], [signature]
    )
    expected = refund_digest(env.domain, order.order_id, RefundReason.INVALID_ACCOUNT)
    with env.reverts("InvalidSignature", env.oracle_key.address, expected):
        env.send(call, env.bystander)


def test_contract_signer_via_explicit_signer_argument(env: EscrowEnv) -> None:
    """EIP-1271: the signer argument names a contract; its owner key signs the same typed data."""
    wallet = env.deploy_helper("ERC1271Signer", env.oracle_key.address)
    env.add_oracle_signer(wallet.address)
    order = env.make_order()
    env.pay(order)
    receipt = env.settle(order, signer=wallet.address)
    (attested,) = env.events(receipt, "FulfilmentsAttested")
    assert attested.args.signers == [wallet.address]
    assert env.status(order) == OrderStatus.SETTLED


# ---------------------------------------------------------------------------------------- Order validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("buyer", "0x1234"),
        ("buyer", b"\x11" * 20),
        ("merchant", "not an address"),
        ("token", "0x" + "zz" * 20),
        ("order_id", b"\x01" * 31),
        ("order_id", "0x" + "01" * 32),
        ("sku_hash", b"\x01" * 33),
        ("account_commitment", b""),
        ("amount", -1),
        ("amount", 2**256),
        ("amount", 0),
        ("amount", True),
        ("amount", 1.0),
        ("fee_bps", -1),
        ("fee_bps", MAX_BPS + 1),
        ("quote_expiry", -1),
        ("quote_expiry", 2**48),
        ("fulfilment_deadline", 2**48),
    ],
)
def test_order_validation_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        Order(**valid_order_kwargs(**{field: value}))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_deadline_before_quote_expiry_rejected() -> None:
    with pytest.raises(ProtocolError) as caught:
        Order(**valid_order_kwargs(quote_expiry=1_800_000_000, fulfilment_deadline=1_799_999_999))
    assert caught.value.field == "fulfilment_deadline"


def test_order_normalises_addresses_and_exposes_fee() -> None:
    order = Order(**valid_order_kwargs(buyer="0x" + "ab" * 20, amount=10_007, fee_bps=250))
    assert order.buyer == to_checksum_address("0x" + "ab" * 20)
    assert (order.fee, order.merchant_amount) == (250, 9_757)  # 250.175 rounds down; merchant gets the rest
    assert order.is_native


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"order_id": b"\x00" * 31}, "order_id"),
        ({"receipt_hash": b"\x00" * 33}, "receipt_hash"),
        ({"fulfilled_at": -1}, "fulfilled_at"),
        ({"fulfilled_at": 2**48}, "fulfilled_at"),
    ],
)
def test_fulfilment_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"order_id": b"\x00" * 32, "receipt_hash": b"\x00" * 32, "fulfilled_at": 0}
    with pytest.raises(ProtocolError) as caught:
        Fulfilment(**{**values, **kwargs})
    assert caught.value.field == field


def test_other_validation_errors_name_the_field() -> None:
    domain = EscrowDomain(1, "0x" + "33" * 20)
    cases = [
        (lambda: EscrowDomain(1, "0x33"), "verifying_contract"),
        (lambda: EscrowDomain(-1, NATIVE_TOKEN), "chain_id"),
        (lambda: refund_typed_data(domain, b"\x00" * 32, 2**16), "reason_code"),
        (lambda: refund_typed_data(domain, b"\x00" * 31, 1), "order_id"),
        (lambda: batch_typed_data(domain, []), "fulfilments"),
    ]
    for build, field in cases:
        with pytest.raises(ProtocolError) as caught:
            build()
        assert caught.value.field == field


# ------------------------------------------------------------------------- receipts, commitments, signing


def test_receipt_hash_is_key_order_independent() -> None:
    receipt = {"orderId": "0x01", "provider": "sim", "items": [{"sku": "a", "qty": 1}], "credited": 60}
    reordered = {"credited": 60, "items": [{"qty": 1, "sku": "a"}], "provider": "sim", "orderId": "0x01"}
    assert receipt_hash(receipt) == receipt_hash(reordered)
    assert receipt_hash(receipt) == keccak(rfc8785.dumps(receipt))
    assert receipt_hash(receipt) != receipt_hash({**receipt, "credited": 61})
    # Canonical form: sorted keys, no whitespace; unlike json.dumps' default output.
    assert rfc8785.dumps(reordered) == json.dumps(receipt, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("receipt", "path"),
    [
        ({"credited": 1.5}, "receipt.credited"),
        ({"items": [{"sku": "a"}, {"price": 9.99}]}, "receipt.items[1].price"),
        ({"meta": {"rate": float("nan")}}, "receipt.meta.rate"),
        ({"values": (1, 2.0)}, "receipt.values[1]"),
    ],
)
def test_receipt_hash_refuses_floats_naming_the_path(receipt: dict[str, Any], path: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        receipt_hash(receipt)
    assert caught.value.field == path


def test_receipt_integers_beyond_json_safe_range_are_refused() -> None:
    """docs/protocol.md: integers outside ±(2**53 - 1) must travel as decimal strings."""
    assert receipt_hash({"amount": 2**53 - 1})
    with pytest.raises(ProtocolError, match="2\\*\\*53") as caught:
        receipt_hash({"amount": 2**53})
    assert caught.value.field == "receipt.amount"
    assert receipt_hash({"amount": str(10**24)}) == keccak(b'{"amount":"1000000000000000000000000"}')


def test_account_commitment_is_keccak_of_account_and_salt() -> None:
    salt = b"\x11" * 32
    commitment = account_commitment("812345678@os_asia", salt)
    assert commitment == keccak(b"812345678@os_asia" + salt)
    assert commitment != account_commitment("812345678@os_asia", b"\x12" + salt[1:])
    assert commitment != account_commitment("812345678@os_asiA", salt)
    # UTF-8, no normalisation: composed and decomposed forms commit differently.
    assert account_commitment("é", salt) == keccak("é".encode() + salt)
    assert account_commitment("é", salt) != account_commitment("e\u0301", salt)


@pytest.mark.parametrize(
    ("account", "salt", "field"), [("", b"\x00" * 32, "account"), ("p", b"\x00" * 31, "salt")]
)
def test_account_commitment_validation(account: str, salt: bytes, field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        account_commitment(account, salt)
    assert caught.value.field == field


def test_sign_and_recover_round_trip() -> None:
    key = Account.from_key(keccak(b"test-protocol-signer"))
    other = Account.from_key(keccak(b"test-protocol-other"))
    domain = EscrowDomain(31337, "0x" + "44" * 20)
    order = Order(**valid_order_kwargs())
    proof = Fulfilment(order.order_id, keccak(b"receipt"), 1_800_000_100)
    messages = [
        quote_typed_data(domain, order),
        fulfilment_typed_data(domain, proof),
        batch_typed_data(domain, [proof, proof]),
        refund_typed_data(domain, order.order_id, RefundReason.PROVIDER_REJECTED),
    ]
    for message in messages:
        signature = sign(key.key, message)
        assert len(signature) == 65  # r || s || v
        assert signature[64] in (27, 28)
        assert int.from_bytes(signature[32:64], "big") <= SECP256K1_HALF_ORDER  # low s, as ECDSA.sol wants
        assert recover_signer(message, signature) == key.address
        assert recover_signer(message, sign(other.key, message)) == other.address
    # A signature over one message recovers to someone else for another.
    assert recover_signer(messages[1], sign(key.key, messages[0])) != key.address


# --------------------------------------------------------------------------------------- docs/protocol.md


def _doc_recipe() -> str:
    """The Python block of docs/protocol.md's verification recipe, exactly as printed."""
    blocks = re.findall(r"```python\n(.*?)```", PROTOCOL_MD.read_text(encoding="utf-8"), flags=re.DOTALL)
    (recipe,) = [block for block in blocks if block.startswith("# verify_settlement.py")]
    return recipe


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    source = _doc_recipe()
    # Proven without Cardless code: plain eth-account typed data, no import of this project.
    assert "encode_typed_data(full_message=" in source
    assert not re.search(
        r"^\s*(from|import)\s+(oracles|gateway|adapters|tests)\b", source, flags=re.MULTILINE
    )
    namespace: dict[str, Any] = {"__name__": "verify_settlement"}
    exec(compile(source, str(PROTOCOL_MD), "exec"), namespace)
    return namespace


def test_doc_recipe_verifies_a_single_settle(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    order = env.make_order(amount=10 * TOKEN_UNIT + 3)
    env.pay(order)
    proof = env.fulfilment(order)
    receipt = env.settle(order, fulfilment=proof)

    result = recipe["verify_settlement"](env.w3, env.escrow.address, order.order_id)

    assert result["signers"] == [env.oracle_key.address]
    assert result["signer_kinds"] == {env.oracle_key.address: "eoa"}
    assert result["threshold"] == 1
    assert result["digest"] == fulfilment_digest(env.domain, proof)
    assert (result["receipt_hash"], result["fulfilled_at"]) == proof.as_tuple()
    assert result["order"] == order.as_message()
    assert (result["fee"], result["merchant_amount"]) == (order.fee, order.merchant_amount)
    assert result["transaction"] == bytes(receipt["transactionHash"])
    assert env.escrow_balance(order.merchant, order.token) == result["merchant_amount"]


def test_doc_recipe_verifies_every_order_of_a_batch(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    batch = [
        env.make_order(),
        env.make_order(token=None, amount=10**15),
        env.make_order(merchant=env.merchants[2].address),
    ]
    for order in batch:
        env.pay(order)
    proofs = [env.fulfilment(order) for order in batch]
    env.settle_batch(batch, fulfilments=proofs)

    for order in batch:
        result = recipe["verify_settlement"](env.w3, env.escrow.address, order.order_id)
        assert result["digest"] == batch_digest(env.domain, proofs)
        assert result["signers"] == [env.oracle_key.address]
        assert result["order"] == order.as_message()


def test_doc_recipe_judges_authorisation_at_the_settlement(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    order = env.make_order()
    env.pay(order)
    env.settle(order)
    env.send(env.escrow.functions.revokeOracleSigner(env.oracle_key.address), env.owner)
    # Revoked afterwards: the settlement was still proven by a then-authorised signer.
    result = recipe["verify_settlement"](env.w3, env.escrow.address, order.order_id)
    assert result["signer_kinds"] == {env.oracle_key.address: "eoa"}
    assert not recipe["_was_authorised"](
        env.w3,
        env.escrow.address,
        recipe["ORACLE_SIGNER_SET"],
        env.oracle_key.address,
        {
            "blockNumber": env.w3.eth.block_number,
            "transactionIndex": 2**32,
            "logIndex": 0,
        },  # after the revoke
        0,
    )


def test_doc_recipe_verifies_a_contract_signer(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    wallet = env.deploy_helper("ERC1271Signer", env.oracle_key.address)
    env.add_oracle_signer(wallet.address)
    order = env.make_order()
    env.pay(order)
    env.settle(order, signer=wallet.address)

    result = recipe["verify_settlement"](env.w3, env.escrow.address, order.order_id)
    assert (result["signers"], result["signer_kinds"]) == ([wallet.address], {wallet.address: "erc1271"})


def test_doc_recipe_verifies_two_of_n_and_upper_case_ids(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    """Protocol v2: k-of-n signers (each checked, the threshold read from OracleThresholdSet at the
    settlement), and an order id given as an upper-case hex string (as block explorers print them)."""
    second = Account.from_key(keccak(b"protocol-test-second-oracle"))
    env.add_oracle_signer(second.address)
    env.set_oracle_threshold(2)
    order = env.make_order()
    env.pay(order)
    env.settle(order, keys=[env.oracle_key, second])

    upper = "0x" + order.order_id.hex().upper()
    result = recipe["verify_settlement"](env.w3, env.escrow.address, upper)
    expected = sorted([env.oracle_key.address, second.address], key=lambda a: int(a, 16))
    assert (result["signers"], result["threshold"]) == (expected, 2)
    assert set(result["signer_kinds"].values()) == {"eoa"}
    assert recipe["verify_quote"](env.w3, env.escrow.address, upper)["order"] == order.as_message()
    with pytest.raises(recipe["NotVerified"]):  # an id that is not 32 bytes of hex
        recipe["verify_settlement"](env.w3, env.escrow.address, upper[:-2])


def test_doc_recipe_verifies_the_quote(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    order = env.make_order()
    env.pay(order)
    result = recipe["verify_quote"](env.w3, env.escrow.address, order.order_id)
    assert result["signer"] == env.quote_key.address
    assert result["digest"] == quote_digest(env.domain, order)
    assert result["order"] == order.as_message()


def test_doc_recipe_rejects_what_it_cannot_prove(env: EscrowEnv, recipe: dict[str, Any]) -> None:
    not_verified = recipe["NotVerified"]
    unpaid = env.make_order()
    with pytest.raises(not_verified, match="OrderPaid"):
        recipe["verify_settlement"](env.w3, env.escrow.address, unpaid.order_id)

    refunded = env.make_order()
    env.pay(refunded)
    env.refund(refunded)
    with pytest.raises(not_verified):
        recipe["verify_settlement"](env.w3, env.escrow.address, refunded.order_id)

    # The signature check itself: a proof signed by someone else does not verify for the oracle signer.
    proof = env.fulfilment(refunded)
    signable = fulfilment_typed_data(env.domain, proof)
    stranger = sign(keccak(b"stranger"), signable)
    with pytest.raises(not_verified, match="does not verify"):
        recipe["_signed_by"](env.w3, signable, stranger, env.oracle_key.address, "latest")
    good = env.oracle_sign(signable)
    assert recipe["_signed_by"](env.w3, signable, good, env.oracle_key.address, "latest") == "eoa"


def test_doc_recipe_types_are_the_protocol_types(recipe: dict[str, Any]) -> None:
    order = Order(**valid_order_kwargs())
    domain = EscrowDomain(1, "0x" + "55" * 20)
    proof = Fulfilment(order.order_id, keccak(b"r"), 5)
    pairs = [
        ("Order", order.as_message(), quote_typed_data(domain, order)),
        ("Fulfilment", proof.as_message(), fulfilment_typed_data(domain, proof)),
        ("FulfilmentBatch", {"fulfilments": [proof.as_message()]}, batch_typed_data(domain, [proof])),
    ]
    for primary, message, expected in pairs:
        full_message = {
            "types": {
                "EIP712Domain": recipe["TYPES"]["EIP712Domain"],
                **{t: recipe["TYPES"][t] for t in recipe["PRIMARY_TYPES"][primary]},
            },
            "primaryType": primary,
            "domain": domain.as_dict(),
            "message": message,
        }
        assert ethereum_digest(encode_typed_data(full_message=full_message)) == ethereum_digest(expected)


def test_doc_worked_examples() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    salt = b"\x11" * 32
    commitment = account_commitment("812345678@os_asia", salt)
    assert "0x" + commitment.hex() in text
    order_id = keccak(b"cardless-example-order-1")
    receipt = {  # the shape oracles/outcomes.py builds
        "version": 1,
        "order_id": "0x" + order_id.hex(),
        "provider": "sim",
        "provider_ref": "SIM-20260101-000042",
        "sku": "genshin-60",
        "credited": 60,
        "account_commitment": "0x" + commitment.hex(),
        "completed_at": 1767225600,
    }
    assert json.dumps(receipt) in text
    assert rfc8785.dumps(receipt).decode() in text
    assert "0x" + receipt_hash(receipt).hex() in text
    type_strings = {
        "Order(bytes32 orderId,address buyer,address merchant,address token,uint256 amount,uint16 feeBps,"
        "uint48 quoteExpiry,uint48 fulfilmentDeadline,bytes32 skuHash,bytes32 accountCommitment)",
        "Fulfilment(bytes32 orderId,bytes32 receiptHash,uint48 fulfilledAt)",
        "FulfilmentBatch(Fulfilment[] fulfilments)"
        "Fulfilment(bytes32 orderId,bytes32 receiptHash,uint48 fulfilledAt)",
        "Refund(bytes32 orderId,uint16 reasonCode)",
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
    }
    for type_string in type_strings:
        assert "0x" + keccak(text=type_string).hex() in text, type_string
    for reason in RefundReason:
        assert f"| {reason.value} | `{reason.name}` |" in text


def test_order_event_round_trip(env: EscrowEnv) -> None:
    """Order.from_event rebuilds exactly the paid order (what watchers and auditors start from)."""
    order = env.make_order()
    (event,) = env.events(env.pay(order), "OrderPaid")
    rebuilt = Order.from_event(event.args)
    assert rebuilt == order
    assert dataclasses.replace(rebuilt, amount=order.amount + 1).digest != order.digest


_HEX = "0123456789abcdefABCDEF"


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text(alphabet=_HEX, min_size=38, max_size=42),
    prefix=st.sampled_from(["0x", "0X", "", "x", "00x"]),
    case=st.sampled_from(["as drawn", "lower", "upper", "checksummed"]),
)
def test_checksum_address_answers_as_eth_utils(digits: str, prefix: str, case: str) -> None:
    """The quote path's one-keccak EIP-55 gives what eth_utils gives, and refuses what it refuses."""
    from eth_utils import is_address

    from cardless.protocol import checksum_address

    if case == "lower":
        digits = digits.lower()
    elif case == "upper":
        digits = digits.upper()
    elif case == "checksummed" and len(digits) == 40:
        digits = to_checksum_address("0x" + digits)[2:]
    value = prefix + digits
    expected = to_checksum_address(value) if is_address(value) else None
    assert checksum_address(value) == expected

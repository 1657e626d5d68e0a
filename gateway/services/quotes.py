"""Quotes: validate the game account with a provider *before* the buyer pays, then sign the order.

Nothing is written unless the quote is issued: a refused account, an unknown SKU or a provider
outage leaves no row behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio.to_thread
from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import (
    function_abi_to_4byte_selector,
    get_abi_input_types,
    keccak,
    to_checksum_address,
)
from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from adapters import ProviderAdapter, Refusal, Validation
from adapters._exceptions import AdapterError
from adapters.provider_file import AccountFormat
from cardless import protocol
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, OrderEvent
from cardless.ledger.risk.models import RequestSignal
from cardless.ledger.risk.signals import request_signal_values
from cardless.ledger.store import new_order_values
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import Deployment
from cardless.protocol.erc20 import ERC20_ABI
from gateway.schemas import (
    AccountCheck,
    Eip712Domain,
    Eip712Field,
    Eip712Payload,
    OrderMessage,
    PermitHint,
    QuoteOut,
    TokenOut,
    TransactionStep,
)
from gateway.services._exceptions import InvalidField, NotFound, ServiceUnavailable
from gateway.services._writes import write_soon, write_turn
from gateway.services.accounts import check_account_format, clean_account
from gateway.services.skus import QuotableCache, check_daily_limits

__all__ = ["QuoteService"]

_ZERO_ADDRESS = to_checksum_address("0x" + "00" * 20)


@functools.cache
def _calldata_encoder(artifact: str | None, name: str) -> tuple[bytes, tuple[str, ...], bool]:
    """The selector and argument types of ``name`` in an artifact's ABI (None: ERC-20), looked up once,
    and whether :func:`_abi_encode` can encode them. web3's ``contract.encode_abi`` looks the function
    up in the ABI again at every call: it was most of a quote's CPU time (docs/benchmarks.md)."""
    abi: list[dict[str, Any]] = list(load_artifact(artifact).abi if artifact else ERC20_ABI)
    (fn,) = [f for f in abi if f.get("type") == "function" and f.get("name") == name]
    types = tuple(get_abi_input_types(fn))  # type: ignore[arg-type]
    selector = function_abi_to_4byte_selector(fn)  # type: ignore[arg-type]
    return selector, types, all(_encodable(t) for t in types)


def _calldata(artifact: str | None, name: str, args: list[Any]) -> str:
    selector, types, ours = _calldata_encoder(artifact, name)
    return "0x" + (selector + (_abi_encode(types, args) if ours else encode(types, args))).hex()


_UINT = re.compile(
    r"^uint(8|16|24|32|40|48|56|64|72|80|88|96|104|112|120|128|136|144|152|160|168|176|184|192|200|208|216|224|232|240|248|256)$"
)
_STATIC = ("address", "bytes32")


def _encodable(abi_type: str) -> bool:
    """The types a quote's calldata uses: static words, a tuple of them (a struct), ``bytes``."""
    if abi_type.startswith("(") and abi_type.endswith(")"):
        return all(t in _STATIC or _UINT.match(t) for t in abi_type[1:-1].split(","))
    return abi_type in _STATIC or abi_type == "bytes" or _UINT.match(abi_type) is not None


def _word(abi_type: str, value: Any) -> bytes:
    """One static ABI word; refuses what ``eth_abi`` refuses for these types (wrong size, out of range)."""
    if abi_type == "address":
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) and value[:2] in ("0x", "0X") else value
        if not isinstance(raw, bytes) or len(raw) != 20:
            raise ValueError(f"not an address: {value!r}")
        return bytes(12) + raw
    if abi_type == "bytes32":
        if not isinstance(value, bytes) or len(value) != 32:
            raise ValueError(f"not 32 bytes: {value!r}")
        return value
    bits = int(abi_type[4:])  # uintN (checked by _encodable)
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise ValueError(f"not a {abi_type}: {value!r}")
    return value.to_bytes(32, "big")


def _abi_encode(types: tuple[str, ...], args: list[Any]) -> bytes:
    """``eth_abi.encode`` for the types :func:`_encodable` accepts, in a few microseconds: eth_abi's
    generic encoders (and their checks through eth_utils) were a tenth of a quote's CPU. Compared with
    eth_abi on random arguments by the tests."""
    if len(types) != len(args):
        raise ValueError(f"{len(types)} types, {len(args)} arguments")
    heads: list[bytes] = []
    tails: list[bytes] = []
    offset = sum(32 * (t.count(",") + 1) if t.startswith("(") else 32 for t in types)
    for abi_type, value in zip(types, args, strict=True):
        if abi_type.startswith("("):
            inner = abi_type[1:-1].split(",")
            if len(inner) != len(value):
                raise ValueError(f"{abi_type} takes {len(inner)} values, not {len(value)}")
            heads.append(b"".join(_word(t, v) for t, v in zip(inner, value, strict=True)))
        elif abi_type == "bytes":
            if not isinstance(value, bytes):
                raise ValueError(f"not bytes: {value!r}")
            heads.append(offset.to_bytes(32, "big"))
            tail = len(value).to_bytes(32, "big") + value + bytes(-len(value) % 32)
            tails.append(tail)
            offset += len(tail)
        else:
            heads.append(_word(abi_type, value))
    return b"".join(heads) + b"".join(tails)


# Core INSERTs of the mapped tables (executed on the connection: no ORM bulk path, keys by column).
_ORDERS: Final = insert(Order)
_ORDER_EVENTS: Final = insert(OrderEvent)
_SIGNALS: Final = insert(RequestSignal)


_Values = dict[str, Any]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()  # eth_utils.to_hex of bytes, without its argument checks


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One table's INSERT for given value keys as plain SQL: the columns it writes (those given, then those
    with a Python-side default), each with its default and the dialect's bind processor."""

    sql: str
    columns: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    """(key, its default (_GIVEN: from the values; a ColumnDefault otherwise), bind processor)."""

    def parameters(self, values: _Values) -> list[Any]:
        out = []
        for key, default, process in self.columns:
            value = (
                values[key]
                if default is _GIVEN
                else (default.arg(None) if default.is_callable else default.arg)
            )
            out.append(process(value) if process is not None else value)
        return out


_GIVEN: Final = object()


class _SqliteInserts:
    """A quote's three INSERTs as SQL on the sqlite3 connection (``gateway.services._writes.try_write``'s
    ``raw``), with what SQLAlchemy's Core INSERT sends: the given values and the columns' Python-side
    defaults (``utcnow``, ``0``), each through the column type's bind processor for the dialect (a time as
    SQLite text, JSON, a uint256). The tests compare the rows it writes with the Core INSERT's. A column
    default SQLite cannot be given as a value (an SQL expression, a sequence) makes it decline (None): the
    Core INSERT then."""

    def __init__(self) -> None:
        self._plans: dict[tuple[int, str, tuple[str, ...]], _Plan | None] = {}

    def plan(self, dialect: Any, table: Any, keys: tuple[str, ...]) -> _Plan | None:
        cache = (id(dialect), table.name, keys)
        if cache in self._plans:
            return self._plans[cache]
        found: _Plan | None = None
        if dialect.name == "sqlite" and set(keys) <= set(table.columns.keys()):
            columns: list[tuple[str, Any, Callable[[Any], Any] | None]] = []
            usable = True
            for column in table.columns:
                if column.key in keys:
                    default: Any = _GIVEN
                elif column.default is not None:
                    default = column.default
                    usable &= bool(default.is_scalar or default.is_callable)
                else:
                    continue  # NULL, or the database's own default
                columns.append(
                    (column.key, default, column.type.dialect_impl(dialect).bind_processor(dialect))
                )
            if usable:
                quote = dialect.identifier_preparer
                names = ", ".join(quote.format_column(table.columns[key]) for key, _, _ in columns)
                marks = ", ".join("?" for _ in columns)
                found = _Plan(
                    f"INSERT INTO {quote.format_table(table)} ({names}) VALUES ({marks})", tuple(columns)
                )
        if len(self._plans) < 64:  # three tables, a few key sets
            self._plans[cache] = found
        return found

    def writer(
        self, sessions: sessionmaker[Session], row: _Values, event: _Values, signal: _Values | None
    ) -> Callable[[sqlite3.Connection], None] | None:
        """The quote's writes for the sqlite3 connection; None: not SQLite, or a default it cannot give."""
        bind = sessions.kw.get("bind")
        dialect = getattr(bind, "dialect", None)
        if dialect is None or dialect.name != "sqlite":
            return None
        steps = [(_ORDERS_TABLE, row), (_EVENTS_TABLE, event)]
        if signal is not None:
            steps.append((_SIGNALS_TABLE, signal))
        planned = [(self.plan(dialect, table, tuple(values)), values) for table, values in steps]
        if any(plan is None for plan, _ in planned):
            return None

        def write(connection: sqlite3.Connection) -> None:
            for plan, values in planned:
                assert plan is not None
                connection.execute(plan.sql, plan.parameters(values))

        return write


_ORDERS_TABLE: Final = Order.__table__
_EVENTS_TABLE: Final = OrderEvent.__table__
_SIGNALS_TABLE: Final = RequestSignal.__table__
_SQLITE_INSERTS: Final = _SqliteInserts()


def _chain_now(w3: Web3) -> int:
    """The latest block's timestamp, read every time (a test chain's clock jumps; a quote priced on a
    cached time could be born expired), but with one raw JSON-RPC call: web3's result formatters turn
    every field of the block into Python values, which was half of the read's CPU."""
    reply: Any = w3.provider.make_request("eth_getBlockByNumber", ["latest", False])  # type: ignore[arg-type]
    block = reply.get("result") if isinstance(reply, dict) else None
    if not isinstance(block, dict) or "timestamp" not in block:
        return int(w3.eth.get_block("latest")["timestamp"])  # web3 raises the node's error, if any
    stamp = block["timestamp"]
    return int(stamp, 16) if isinstance(stamp, str) else int(stamp)


@dataclasses.dataclass
class QuoteService:
    w3: Web3
    sessions: sessionmaker[Session]
    deployment: Deployment
    adapters: Mapping[str, ProviderAdapter]
    quote_key: LocalAccount
    cipher: AccountCipher
    quote_ttl: int
    fulfilment_window: int
    account_formats: Mapping[str, AccountFormat] = dataclasses.field(default_factory=dict)
    """Provider name -> the ``[account]`` format its provider file declares."""
    catalogue: QuotableCache = dataclasses.field(default_factory=QuotableCache)
    """The SKUs on sale, cached until edited (see :class:`gateway.services.skus.QuotableCache`)."""
    chain_time_ttl: float = 0.0
    """Seconds a read of the chain's time is reused by later quotes (0: read for every quote). A reused
    time is older than a fresh one, never newer, so a quote expires at most this much earlier; it must
    stay 0 where a dev chain's clock is moved forward between quotes (the tests)."""
    _domain: protocol.EscrowDomain = dataclasses.field(init=False, repr=False)
    _eip712_parts: tuple[dict[str, list[Eip712Field]], Eip712Domain] = dataclasses.field(
        init=False, repr=False
    )
    _tokens_out: dict[str, TokenOut] = dataclasses.field(init=False, repr=False)
    _signal_hashes: dict[tuple[str, str], str] = dataclasses.field(init=False, repr=False)
    _chain_time: tuple[float, int] | None = dataclasses.field(default=None, init=False, repr=False)
    """(monotonic time of the read, the chain's time it gave)."""
    _chain_read: asyncio.Task[int] | None = dataclasses.field(default=None, init=False, repr=False)
    """The read of the chain's time under way, which the quotes that find the time stale share."""

    def __post_init__(self) -> None:
        self._domain = self.deployment.domain  # validated once, not per quote
        # The parts of every quote's answer that never change, validated once (a tenth of the answer's
        # CPU was validating the EIP-712 types and domain again for each quote); pydantic keeps a model
        # instance as it is, so the answer is the same one.
        self._eip712_parts = (
            {
                name: [Eip712Field.model_validate(f) for f in fields]
                for name, fields in protocol.quote_types().items()
            },
            Eip712Domain.model_validate(self._domain.as_dict()),
        )
        self._tokens_out: dict[str, TokenOut] = {}
        self._signal_hashes: dict[tuple[str, str], str] = {}

    async def create(
        self,
        *,
        sku_id: str,
        account: str,
        token_symbol: str,
        buyer: str,
        client: str | None = None,
        user_agent: str = "",
    ) -> QuoteOut:
        """``client`` (the peer address) and ``user_agent``: kept as keyed hashes for the risk engine
        (``cardless.ledger.risk.signals``); None records no signal."""
        # The catalogue in the database: a disabled SKU or merchant reads as unknown.
        sku = self.catalogue.get(self.sessions, sku_id)
        if sku is None:
            raise NotFound("sku", f"unknown SKU {sku_id!r}")
        if token_symbol not in sku.prices:
            raise InvalidField(
                "token", f"{sku_id} is not sold in {token_symbol!r}; prices in {sorted(sku.prices)}"
            )
        try:
            token = self.deployment.token(token_symbol)
        except KeyError:
            raise InvalidField("token", f"{token_symbol!r} is not accepted by this escrow") from None
        # Mixed case is an EIP-55 checksum; a wrong one means a mistyped address, and the order would
        # bind a buyer who is not the payer (pay reverts BuyerMismatch).
        payer = protocol.checksum_address(buyer)
        if payer is None:
            raise InvalidField("buyer", "must be a 20-byte hex address")
        digits = buyer[-40:]
        if digits != digits.lower() and digits != digits.upper() and digits != payer[2:]:
            raise InvalidField("buyer", "mixed-case address with a wrong EIP-55 checksum (a typo?)")
        self._check_buyer(payer)
        if sku.daily_limit is not None or sku.buyer_daily_limit is not None:
            with self.sessions() as session:
                check_daily_limits(session, sku, buyer)
        account = clean_account(account)
        check_account_format(account, sku_id, sku.providers, self.account_formats)
        provider_name, validation = await self._validate_account(sku.providers, sku_id, account)

        # The two round trips of a quote (the chain's time, the insert) never wait on the event loop: there
        # they held every other request for their whole wait (the node's answer, SQLite's write lock
        # while the oracle commits), which serialised concurrent quotes. The chain's time is read on a
        # worker thread; the insert runs on the loop only when SQLite's write lock is free at once, or is
        # within a few milliseconds' sleep on the loop (gateway.services._writes.write_soon), else on a
        # worker thread.
        now = await self._now()
        order_id = secrets.token_bytes(32)
        order_hex = _hex(order_id)
        # Derived from the account key, not stored: a copy of the database alone cannot test guesses
        # of the account against the commitment. The buyer gets it in the quote.
        salt = self.cipher.salt(order_hex)
        order = protocol.Order(
            order_id=order_id,
            buyer=payer,
            merchant=sku.merchant_address,
            token=token.address,
            amount=sku.prices[token_symbol],
            fee_bps=sku.fee_bps,
            quote_expiry=now + self.quote_ttl,
            fulfilment_deadline=now + self.fulfilment_window,
            sku_hash=keccak(text=sku.id),
            account_commitment=protocol.account_commitment(account, salt),
        )
        domain = self._domain
        signature = protocol.sign_digest(self.quote_key.key, protocol.quote_digest(domain, order))
        providers = [provider_name] + [p for p in sku.providers if p != provider_name]
        account_hash = self.cipher.account_hash(account)
        row, event = new_order_values(
            order,
            domain=domain,
            sku=sku.id,
            providers=providers,
            account_ciphertext=self.cipher.encrypt(account, order_hex),
            quote_signer=self.quote_key.address,
            quote_signature=signature,
            reason=f"quote issued; account validated by {provider_name}",
            account_hash=account_hash,
        )
        signal = (
            None
            if client is None
            else request_signal_values(
                self.cipher,
                order_id=order_hex,
                buyer=order.buyer,
                account_hash=account_hash,
                client=client,
                user_agent=user_agent,
                hashes=self._signal_hashes,
            )
        )
        # One transaction, three plain INSERTs of the rows' column values (the ledger's
        # ``new_order_values`` and ``request_signal_values``): the ORM's unit of work (flush bookkeeping,
        # statement compilation) was most of a quote's database time, and building the ORM objects only to
        # read their columns back a tenth of a quote's CPU.
        raw = _SQLITE_INSERTS.writer(self.sessions, row, event, signal)
        if not await write_soon(self.sessions, functools.partial(self._insert, row, event, signal), raw=raw):
            await anyio.to_thread.run_sync(self._store, row, event, signal)
        # A mistyped account of a valid shape passes validation; the nickname the provider returns
        # for it is what lets the buyer notice before paying.
        check = AccountCheck(account=account, provider=provider_name, nickname=validation.nickname)
        token_out = self._tokens_out.get(token_symbol)
        if token_out is None:  # the deployment's tokens: a bounded set
            token_out = self._tokens_out[token_symbol] = TokenOut(**token.model_dump(mode="json"))
        return self._quote_out(order, signature, salt, token_out, check)

    async def _now(self) -> int:
        """The chain's time: read on a worker thread, or the last read while it is under
        ``chain_time_ttl`` old (one JSON-RPC round trip was a tenth of a quote's CPU). When it is stale,
        the first quote reads it and the quotes that find it stale meanwhile wait for that read (they
        each read it before: a dozen reads a second at 300 quotes/s)."""
        cached = self._chain_time
        if cached is not None and time.monotonic() - cached[0] < self.chain_time_ttl:
            return cached[1]
        if self.chain_time_ttl <= 0:
            return await anyio.to_thread.run_sync(_chain_now, self.w3)
        loop = asyncio.get_running_loop()
        reading = self._chain_read
        if reading is None or reading.get_loop() is not loop:
            reading = self._chain_read = loop.create_task(self._read_chain_time())
        # Shielded: a quote whose client went away does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _read_chain_time(self) -> int:
        read_at = time.monotonic()  # the age counts from before the read: never older than the TTL
        try:
            now = await anyio.to_thread.run_sync(_chain_now, self.w3)
        finally:
            self._chain_read = None
        self._chain_time = (read_at, now)
        return now

    def _store(self, row: _Values, event: _Values, signal: _Values | None) -> None:
        engine = self.sessions.kw["bind"]  # Core INSERTs: no ORM session needed
        with write_turn(self.sessions), engine.begin() as connection:
            self._insert(row, event, signal, connection)

    @staticmethod
    def _insert(row: _Values, event: _Values, signal: _Values | None, connection: Connection) -> None:
        connection.execute(_ORDERS, row)
        connection.execute(_ORDER_EVENTS, event)
        if signal is not None:
            connection.execute(_SIGNALS, signal)

    def _check_buyer(self, buyer: str) -> None:
        """Refuse a buyer that can never sign the payment: nobody holds the zero address's key, and the
        escrow and the accepted tokens are contracts, so a quote for them only lures a mistaken payer."""
        if buyer == _ZERO_ADDRESS:
            raise InvalidField("buyer", "the zero address cannot pay")
        if buyer == self.deployment.escrow:
            raise InvalidField("buyer", "is the escrow contract itself, not a wallet")
        for token in self.deployment.tokens:
            if not token.is_native and buyer == token.address:
                raise InvalidField("buyer", f"is the {token.symbol} token contract, not a wallet")

    async def _validate_account(
        self, providers: tuple[str, ...], sku_id: str, account: str
    ) -> tuple[str, Validation]:
        """Ask the SKU's providers in order; the first that answers decides. Returns it and its answer."""
        outages: list[str] = []
        for name in providers:
            adapter = self.adapters.get(name)
            if adapter is None:
                outages.append(f"{name}: not configured")
                continue
            try:
                validation = await adapter.validate(sku_id, account)
            except AdapterError as exc:
                outages.append(str(exc))
                continue
            if validation.ok:
                return name, validation
            if validation.refusal is Refusal.INVALID_ACCOUNT:
                raise InvalidField("account", f"the provider does not accept this game account for {sku_id}")
            if validation.refusal is Refusal.UNKNOWN_SKU:
                outages.append(f"{name}: does not sell {sku_id}")
                continue
            outages.append(f"{name}: {validation.refusal.value if validation.refusal else 'refused'}")
        raise ServiceUnavailable("no provider can deliver this order now: " + "; ".join(outages))

    def _quote_out(
        self, order: protocol.Order, signature: bytes, salt: bytes, token: TokenOut, check: AccountCheck
    ) -> QuoteOut:
        domain = self._domain
        pay_data = _calldata("CardlessEscrow", "pay", [order.as_tuple(), self.quote_key.address, signature])
        transactions: list[TransactionStep] = []
        if not order.is_native:
            transactions.append(
                TransactionStep(
                    step="approve",
                    to=order.token,
                    value="0",
                    data=_calldata(None, "approve", [domain.verifying_contract, order.amount]),
                )
            )
        transactions.append(
            TransactionStep(
                step="pay",
                to=domain.verifying_contract,
                value=str(order.amount if order.is_native else 0),
                data=pay_data,
            )
        )
        fields = {k: (_hex(v) if isinstance(v, bytes) else v) for k, v in order.as_message().items()}
        message = OrderMessage.model_validate({**fields, "amount": str(order.amount)})
        types, eip712_domain = self._eip712_parts
        return QuoteOut(
            order_id=_hex(order.order_id),
            order=message,
            token=token,
            quote_signer=self.quote_key.address,
            quote_signature=_hex(signature),
            account_salt=_hex(salt),
            # The types come from cardless.protocol, the one owner of the encoding: a wallet can verify
            # the quote with them and no Cardless code.
            eip712=Eip712Payload.model_validate(
                {"types": types, "domain": eip712_domain, "primaryType": "Order", "message": message}
            ),
            transactions=transactions,
            permit=None
            if order.is_native
            else PermitHint(
                function="payWithPermit(Order,address,bytes,uint256,uint8,bytes32,bytes32)",
                note="sign an EIP-2612 permit for spender=escrow, value=amount, then call payWithPermit "
                "with the order, quote_signer, quote_signature, the permit deadline and v, r, s",
                spender=domain.verifying_contract,
                value=str(order.amount),
            ),
            account_check=check,
        )

    async def check_account(self, *, sku_id: str, account: str) -> AccountCheck:
        """The checks a quote makes of the game account (shape, then the SKU's providers), without
        signing or storing anything: a checkout asks while the buyer types, before a wallet is involved.
        Raises what :meth:`create` raises for the same account."""
        sku = self.catalogue.get(self.sessions, sku_id)
        if sku is None:
            raise NotFound("sku", f"unknown SKU {sku_id!r}")
        account = clean_account(account)
        check_account_format(account, sku_id, sku.providers, self.account_formats)
        provider_name, validation = await self._validate_account(sku.providers, sku_id, account)
        return AccountCheck(account=account, provider=provider_name, nickname=validation.nickname)

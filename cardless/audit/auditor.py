"""The audit: read the escrow's logs in order, rebuild its state, check every order and every wei.

The scan is one pass over the escrow's logs (ranged ``eth_getLogs`` pages, :mod:`.rpc`). Each log is
applied in chain order (block, transaction index, log index), so the admin state an order is checked
against is exactly the state *at its position*: a signer revoked one transaction earlier is already
revoked. What a log cannot prove is read from the transaction's calldata (the quote signature of
``pay``, the proofs of ``settle``/``settleBatch``, the authorisation of ``refund``) and checked with the
protocol package's own encoders (``cardless.protocol``), never with the ledger or the gateway.

Findings are :class:`~cardless.audit.model.Violation` rows, each naming a rule of
:data:`~cardless.audit.model.RULES`. An order still open past its deadline is *reclaimable*, a
state, not a violation; tokens held beyond what the escrow owes are *surplus*, reported per token.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.messages import SignableMessage
from eth_keys import keys  # type: ignore[attr-defined]
from eth_keys.exceptions import BadSignature
from eth_utils import keccak

from cardless import protocol
from cardless.audit._exceptions import NotAnEscrowError, StateFileError
from cardless.audit.abi import EscrowAbi, Event, checksum, escrow_abi, hexstr
from cardless.audit.model import (
    AuditState,
    OrderRecord,
    Step,
    TokenBooks,
    Violation,
)
from cardless.audit.rpc import ChainReader

__all__ = ["ORDER_EVENTS", "AuditReport", "Auditor"]

_ERC1271: Final = keccak(text="isValidSignature(bytes32,bytes)")[:4]  # also the magic value
_ERC20_BALANCE_OF: Final = keccak(text="balanceOf(address)")[:4]
_VIEW_BALANCE_OF: Final = keccak(text="balanceOf(address,address)")[:4]
_VIEW_FEE_BALANCE: Final = keccak(text="feeBalance(address)")[:4]
_EIP712_DOMAIN: Final = keccak(text="eip712Domain()")[:4]
_GRACE: Final = keccak(text="SETTLEMENT_GRACE()")[:4]
_IS_ORACLE: Final = keccak(text="isOracleSigner(address)")[:4]
_IS_QUOTE: Final = keccak(text="isQuoteSigner(address)")[:4]
_IS_TOKEN: Final = keccak(text="isTokenAllowed(address)")[:4]
_FEE_CAP: Final = keccak(text="feeCapBps()")[:4]
_IS_SWEEPER: Final = keccak(text="isSweeper(address)")[:4]
_PAYOUT_OF: Final = keccak(text="payoutAddressOf(address)")[:4]

# Events that name an order (indexed orderId first): what `cardless audit order` filters on.
ORDER_EVENTS: Final = ("OrderPaid", "OrderSettled", "OrderRefunded", "OrderReclaimed", "RefundDeferred")
_NEEDS_CALLDATA: Final = frozenset({"OrderPaid", "OrderSettled", "OrderRefunded", "Withdrawn"})


# Events whose checks need their block's timestamp.
_TIMED_EVENTS: Final = frozenset({"OrderReclaimed", "AdminChangeScheduled", "AdminChangeExecuted"})

# protocol v2 ``ICardlessEscrow.AdminAction``: the changes that wait ADMIN_DELAY after an announcement.
_ADD_ORACLE_SIGNER, _ADD_QUOTE_SIGNER, _SET_FEE_RECIPIENT, _RAISE_FEE_CAP, _SET_ORACLE_THRESHOLD = range(5)
_ADMIN_ACTIONS: Final = {
    _ADD_ORACLE_SIGNER: "AddOracleSigner",
    _ADD_QUOTE_SIGNER: "AddQuoteSigner",
    _SET_FEE_RECIPIENT: "SetFeeRecipient",
    _RAISE_FEE_CAP: "RaiseFeeCap",
    _SET_ORACLE_THRESHOLD: "SetOracleThreshold",
}
_ADMIN_DELAY: Final = keccak(text="ADMIN_DELAY()")[:4]
_ADMIN_GRACE: Final = keccak(text="ADMIN_GRACE()")[:4]
_THRESHOLD: Final = keccak(text="oracleThreshold()")[:4]
_OWED: Final = keccak(text="owed(address)")[:4]
_IS_PENDING: Final = keccak(text="isAdminChangePending(bytes32)")[:4]

# Events per read-ahead chunk: small enough to overlap the node's answers with the checks.
_CHUNK_EVENTS: Final = 400


@dataclasses.dataclass
class _Chunk:
    """A slice of a page, with the transactions and block times its checks need already fetched."""

    events: list[Event]
    txs: dict[str, dict[str, Any]]
    timestamps: dict[int, int]
    unknown: list[str]


@dataclasses.dataclass
class AuditReport:
    """The outcome of :meth:`Auditor.run`: the state (for ``--state``) and the figures of this run."""

    state: AuditState
    to_block: int
    to_timestamp: int
    reclaimable: list[str]
    surplus: dict[str, int]
    rpc_calls: int
    http_requests: int
    rpc_by_method: dict[str, int]
    seconds: float
    blocks_read: int
    new_violations: int

    def as_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "escrow": state.escrow,
            "chain_id": state.chain_id,
            "protocol_version": state.version,
            "from_block": state.from_block,
            "to_block": self.to_block,
            **state.totals(),
            "reclaimable": len(self.reclaimable),
            "reclaimable_orders": self.reclaimable,
            "surplus": {token: str(v) for token, v in self.surplus.items()},
            "tokens": {token: b.as_json() for token, b in state.books.items()},
            "violations": [v.as_json() for v in state.violations],
            "unverified": state.unverified,
            "skipped_settlements": state.skipped_settlements,
            "balance_checks": state.balance_checks,
            "admin": state.admin.as_json(),
            "unknown_events": state.unknown_events,
            "notes": state.notes,
            "rpc": {
                "calls": self.rpc_calls,
                "http_requests": self.http_requests,
                "by_method": self.rpc_by_method,
            },
            "blocks_read": self.blocks_read,
            "seconds": round(self.seconds, 3),
        }


def _b32(value: bytes) -> str:
    return hexstr(value)


class Auditor:
    """Audits one escrow through ``reader``.

    ``focus`` (an order id) makes :meth:`run` also record every check of that order as a
    :class:`~cardless.audit.model.Step` in :attr:`steps` (``cardless audit order``); with
    ``focus_only`` it reads only the logs of that order and the admin events, and skips the books.
    """

    def __init__(
        self,
        reader: ChainReader,
        escrow: str,
        *,
        state: AuditState | None = None,
        balance_every: int = 0,
        focus: str | None = None,
        focus_only: bool = False,
        progress: Callable[[int, int], None] | None = None,
        abi: EscrowAbi | None = None,
    ) -> None:
        self.reader = reader
        self.escrow = checksum(escrow)
        self.abi = abi or escrow_abi()
        self.balance_every = max(0, balance_every)
        self.focus = focus.lower() if focus else None
        self.focus_only = focus_only and focus is not None
        self.progress = progress
        self.steps: list[Step] = []
        self.chain_id = reader.chain_id()
        self.version, self.grace = self._protocol_version()
        self.domain = protocol.EscrowDomain(chain_id=self.chain_id, verifying_contract=self.escrow)
        self._quotes = _QuoteDigests(self.domain)
        if state is not None and (state.escrow != self.escrow or state.chain_id != self.chain_id):
            raise StateFileError(
                f"the state file is for escrow {state.escrow} on chain {state.chain_id}, "
                f"not {self.escrow} on chain {self.chain_id}"
            )
        self.state = state
        self.admin_delay = self._uint_view(_ADMIN_DELAY)
        self.admin_grace = self._uint_view(_ADMIN_GRACE)
        self._executed_now: list[dict[str, Any]] = []
        self._creation_blocks: dict[int, bool] = {}
        self._skims: list[Event] = []  # skims whose block has not been read to its end yet
        self._seed_cache: dict[tuple[bytes, str], bool] = {}
        self._seed_payouts: dict[tuple[bytes, str], str] = {}

    # ------------------------------------------------------------------ set-up

    def _protocol_version(self) -> tuple[str, int | None]:
        raw = self.reader.call(self.escrow, _EIP712_DOMAIN, "latest")
        if not raw:
            raise NotAnEscrowError(f"{self.escrow} answers no eip712Domain(): not a Cardless escrow")
        try:
            _, name, version, chain_id, contract, _, _ = abi_decode(
                ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"], raw
            )
        except Exception as exc:
            raise NotAnEscrowError(f"{self.escrow}: eip712Domain() does not decode ({exc})") from exc
        if name != protocol.DOMAIN_NAME or checksum(contract) != self.escrow:
            raise NotAnEscrowError(
                f"{self.escrow}: EIP-712 domain {name!r} for {contract}: not a Cardless escrow"
            )
        if chain_id != self.chain_id:
            raise NotAnEscrowError(
                f"{self.escrow}: domain chain id {chain_id}, node chain id {self.chain_id}"
            )
        if version != protocol.DOMAIN_VERSION:
            raise NotAnEscrowError(
                f"{self.escrow} speaks protocol version {version}; this auditor checks version "
                f"{protocol.DOMAIN_VERSION}"
            )
        grace = None
        answer = self.reader.call(self.escrow, _GRACE, "latest")
        if answer and len(answer) == 32:
            grace = int.from_bytes(answer, "big")
        return version, grace

    def _uint_view(self, selector: bytes) -> int | None:
        """A constant or immutable of the escrow (None when this escrow has no such view)."""
        answer = self.reader.call(self.escrow, selector, "latest")
        return int.from_bytes(answer, "big") if answer and len(answer) == 32 else None

    def _new_state(self, from_block: int) -> AuditState:
        state = AuditState(
            escrow=self.escrow,
            chain_id=self.chain_id,
            version=self.version,
            from_block=from_block,
            next_block=from_block,
        )
        if from_block > 0 and self.reader.code(self.escrow, from_block - 1):
            # The escrow existed before the first block read: its settings then come from its views at
            # that block (an archive node), and orders paid earlier are not in this audit.
            state.seed_block = from_block - 1
            state.notes.append(
                f"the escrow existed before block {from_block}: orders paid earlier are not audited, and "
                f"settings not changed since are read from the contract at block {from_block - 1}"
            )
            cap = self.reader.call(self.escrow, _FEE_CAP, from_block - 1)
            if cap:
                state.admin.fee_cap = int.from_bytes(cap, "big")
            threshold = self.reader.call(self.escrow, _THRESHOLD, from_block - 1)
            if threshold:
                state.admin.threshold = int.from_bytes(threshold, "big")
        return state

    # ------------------------------------------------------------------ findings

    def _check(
        self,
        passed: bool,
        rule: str,
        step: str,
        detail: str,
        event: Event | None,
        order_id: str | None,
    ) -> bool:
        block = event.block if event else None
        tx = event.tx if event else None
        if order_id is not None and order_id == self.focus:
            self.steps.append(Step(step, passed, detail, block, tx, None if passed else rule))
        if not passed:
            assert self.state is not None
            self.state.violations.append(Violation(rule, detail, block, tx, order_id))
        return passed

    def _note_step(self, step: str, detail: str, event: Event | None, order_id: str) -> None:
        if order_id == self.focus:
            self.steps.append(
                Step(step, True, detail, event.block if event else None, event.tx if event else None)
            )

    # ------------------------------------------------------------------ admin state

    def _authorised(self, kind: str, address: str) -> bool:
        assert self.state is not None
        admin = self.state.admin
        table = {
            "oracle": admin.oracle_signers,
            "quote": admin.quote_signers,
            "token": admin.tokens,
            "sweeper": admin.sweepers,
        }[kind]
        if address in table:
            return table[address]
        if self.state.seed_block is None:
            return False
        selector = {"oracle": _IS_ORACLE, "quote": _IS_QUOTE, "token": _IS_TOKEN, "sweeper": _IS_SWEEPER}[
            kind
        ]
        key = (selector, address)
        if key not in self._seed_cache:
            answer = self.reader.call(
                self.escrow, selector + abi_encode(["address"], [address]), self.state.seed_block
            )
            self._seed_cache[key] = bool(answer) and int.from_bytes(answer or b"", "big") == 1
        return self._seed_cache[key]

    def _admin(self, event: Event, timestamps: dict[int, int]) -> bool:
        """Apply an owner event; False if ``event`` is not one. Protocol v2: a change that must wait out
        the timelock is checked against the announced change executed just before it (same
        transaction), whose delay must have passed (:meth:`_timelocked`)."""
        assert self.state is not None
        admin, args, name = self.state.admin, event.args, event.name
        if name == "OracleSignerSet":
            if args["authorised"]:
                self._timelocked(event, _ADD_ORACLE_SIGNER, _word(args["signer"]))
            admin.oracle_signers[args["signer"]] = bool(args["authorised"])
        elif name == "QuoteSignerSet":
            if args["authorised"]:
                self._timelocked(event, _ADD_QUOTE_SIGNER, _word(args["signer"]))
            admin.quote_signers[args["signer"]] = bool(args["authorised"])
        elif name == "TokenAllowedSet":
            admin.tokens[args["token"]] = bool(args["allowed"])
        elif name == "SweeperSet":
            admin.sweepers[args["sweeper"]] = bool(args["authorised"])
        elif name == "FeeCapSet":
            cap = int(args["feeCapBps"])
            if admin.fee_cap is None or cap > admin.fee_cap:  # lowering is immediate; raising waits
                self._timelocked(event, _RAISE_FEE_CAP, _word(cap))
            admin.fee_cap = cap
        elif name == "FeeRecipientSet":
            self._timelocked(event, _SET_FEE_RECIPIENT, _word(args["feeRecipient"]))
            admin.fee_recipient = args["feeRecipient"]
        elif name == "OracleThresholdSet":
            self._timelocked(event, _SET_ORACLE_THRESHOLD, _word(int(args["threshold"])))
            admin.threshold = int(args["threshold"])
        elif name in ("Paused", "Unpaused"):
            admin.paused = name == "Paused"
        elif name == "OwnershipTransferred":
            admin.owner = args["newOwner"]
        elif name == "AdminChangeScheduled":
            self._scheduled(event, timestamps)
        elif name == "AdminChangeCancelled":
            admin.pending.pop(hexstr(args["id"]), None)
        elif name == "AdminChangeExecuted":
            self._executed(event, timestamps)
        elif name == "PayoutAddressSet":
            admin.payouts[args["account"]] = args["payout"]
        elif name in ("OwnershipTransferStarted", "EIP712DomainChanged"):
            pass
        else:
            return False
        self.state.admin_log.append({"block": event.block, "tx": event.tx, "event": name, **_plain(args)})
        return True

    def _scheduled(self, event: Event, timestamps: dict[int, int]) -> None:
        assert self.state is not None
        args = event.args
        action, value, eta = int(args["action"]), bytes(args["value"]), int(args["eta"])
        change_id = hexstr(args["id"])
        at = timestamps.get(event.block)
        expected = keccak(abi_encode(["uint8", "bytes32", "uint48"], [action, value, eta]))
        self._check(
            hexstr(expected) == change_id,
            "admin.schedule-mismatch",
            "admin change id",
            f"AdminChangeScheduled id {change_id}; keccak256(abi.encode({action}, {hexstr(value)}, {eta})) "
            f"is {hexstr(expected)}",
            event,
            None,
        )
        if self.admin_delay is not None and at is not None:
            self._check(
                eta >= at + self.admin_delay,
                "admin.delay-too-short",
                "admin delay",
                f"change {change_id} scheduled at {at} for {eta}: less than ADMIN_DELAY {self.admin_delay}",
                event,
                None,
            )
        self.state.admin.pending[change_id] = {
            "action": action,
            "action_name": _ADMIN_ACTIONS.get(action, str(action)),
            "value": hexstr(value),
            "eta": eta,
            "block": event.block,
            "tx": event.tx,
        }

    def _executed(self, event: Event, timestamps: dict[int, int]) -> None:
        assert self.state is not None
        change_id = hexstr(event.args["id"])
        change = self.state.admin.pending.pop(change_id, None)
        if change is None and self.state.seed_block is not None and self._pending_before_scan(change_id):
            # announced before the first block read: its announcement (and so its eta) is not in this
            # scan, but the contract had it pending then; the effect that follows is accepted
            self.state.notes.append(
                f"block {event.block}: admin change {change_id} was announced before this scan began; "
                "its delay was not checked"
            )
            self._executed_now.append({"action": None, "value": None})
            return
        if not self._check(
            change is not None,
            "admin.unscheduled-change",
            "admin change executed",
            f"AdminChangeExecuted {change_id}: never scheduled, cancelled or executed already",
            event,
            None,
        ):
            return
        assert change is not None
        at = timestamps.get(event.block)
        eta = int(change["eta"])
        self._check(
            at is not None and at >= eta,
            "admin.executed-early",
            "admin delay passed",
            f"change {change_id} ({change['action_name']}) executed at {at}, eta {eta}",
            event,
            None,
        )
        if self.admin_grace is not None and at is not None:
            self._check(
                at <= eta + self.admin_grace,
                "admin.executed-expired",
                "admin change within its grace",
                f"change {change_id} executed at {at}, after eta {eta} + ADMIN_GRACE {self.admin_grace}",
                event,
                None,
            )
        self._executed_now.append(change)

    def _pending_before_scan(self, change_id: str) -> bool:
        assert self.state is not None and self.state.seed_block is not None
        answer = self.reader.call(
            self.escrow, _IS_PENDING + bytes.fromhex(change_id[2:]), self.state.seed_block
        )
        return bool(answer) and int.from_bytes(answer or b"", "big") == 1

    def _timelocked(self, event: Event, action: int, value: str) -> None:
        """An effective timelocked change must follow its own ``AdminChangeExecuted`` in the same
        transaction, with the same action and value, unless it is the escrow's constructor setting it up
        (deployment is not a change)."""
        for change in self._executed_now:
            if change["action"] is None or (change["action"] == action and change["value"] == value):
                self._executed_now.remove(change)
                return
        if self.admin_delay is None:  # an escrow without a timelock (no ADMIN_DELAY view)
            return
        if event.block not in self._creation_blocks:
            self._creation_blocks[event.block] = event.block == 0 or not self.reader.code(
                self.escrow, event.block - 1
            )
        self._check(
            self._creation_blocks[event.block],
            "admin.unscheduled-change",
            "admin change scheduled",
            f"{event.name} ({_ADMIN_ACTIONS[action]} {value}) took effect without an executed, "
            "announced change whose delay had passed",
            event,
            None,
        )

    # ------------------------------------------------------------------ the scan

    def run(self, from_block: int, to_block: int) -> AuditReport:
        started = time.perf_counter()
        calls_before, http_before = self.reader.stats.calls, self.reader.stats.http_requests
        if self.state is None:
            self.state = self._new_state(from_block)
        state = self.state
        first = state.next_block
        violations_before = len(state.violations)
        total = max(0, to_block - first + 1)
        topics: list[Any] | None = None
        if self.focus_only:
            assert self.focus is not None
            topics = [[self.abi.topic(n) for n in ORDER_EVENTS], self.focus]
        start = first
        while start <= to_block:
            end = to_block
            if self.balance_every and not self.focus_only:
                end = min(to_block, (start // self.balance_every + 1) * self.balance_every - 1)
            self._scan(start, end, topics, first, total)
            if self.balance_every and end < to_block and not self.focus_only:
                self._balances(end, final=False)
            start = end + 1
        self._check_skims()
        state.next_block = max(state.next_block, to_block + 1)
        to_timestamp = self.reader.block_timestamps([to_block])[to_block] if to_block >= 0 else 0
        surplus: dict[str, int] = {}
        if not self.focus_only:
            surplus = self._balances(to_block, final=True)
            self._views(to_block)
        reclaimable = sorted(
            o.order_id
            for o in state.orders.values()
            if o.status == "open" and to_timestamp > o.deadline + (self.grace or 0)
        )
        return AuditReport(
            state=state,
            to_block=to_block,
            to_timestamp=to_timestamp,
            reclaimable=reclaimable,
            surplus=surplus,
            rpc_calls=self.reader.stats.calls - calls_before,
            http_requests=self.reader.stats.http_requests - http_before,
            rpc_by_method=dict(self.reader.stats.by_method),
            seconds=time.perf_counter() - started,
            blocks_read=total,
            new_violations=len(state.violations) - violations_before,
        )

    def _page_done(self, first: int, total: int) -> Callable[[int], None] | None:
        if self.progress is None:
            return None
        progress = self.progress

        def done(end: int) -> None:
            progress(end - first + 1, total)

        return done

    def _merged(self, start: int, end: int, topics: list[Any] | None) -> list[Any]:
        """``audit order``: the order's own logs plus the owner's and the attestations, in chain order."""
        others = [
            self.abi.topic(n)
            for n in (
                "OracleSignerSet",
                "QuoteSignerSet",
                "TokenAllowedSet",
                "FeeCapSet",
                "FeeRecipientSet",
                "FulfilmentsAttested",
                "OracleThresholdSet",
                "AdminChangeScheduled",
                "AdminChangeCancelled",
                "AdminChangeExecuted",
            )
            if n in self.abi.event_names
        ]
        logs: list[Any] = []
        for _, _, page in self.reader.logs(self.escrow, start, end, topics):
            logs.extend(page)
        for _, _, page in self.reader.logs(self.escrow, start, end, [others]):
            logs.extend(page)

        def position(log: dict[str, Any]) -> tuple[int, int, int]:
            return (int(log["blockNumber"], 16), int(log["transactionIndex"], 16), int(log["logIndex"], 16))

        return sorted({(log["transactionHash"], log["logIndex"]): log for log in logs}.values(), key=position)

    def _scan(self, start: int, end: int, topics: list[Any] | None, first: int, total: int) -> None:
        """Read ``start..end`` and apply it. Reading (logs, then the transactions and block times they
        need) runs one chunk ahead in a thread, so the node answers while the audit checks: on one
        machine the two processes then use both cores."""
        chunks: queue.Queue[_Chunk | BaseException | None] = queue.Queue(maxsize=4)

        def read() -> None:
            try:
                pages: Iterable[list[Any]]
                if self.focus_only:
                    pages = [self._merged(start, end, topics)]
                else:
                    logs = self.reader.logs(self.escrow, start, end, None, self._page_done(first, total))
                    pages = (page for _, _, page in logs)
                for page in pages:
                    for chunk in self._prepare(page):
                        chunks.put(chunk)
                chunks.put(None)
            except BaseException as exc:  # handed to the applying thread, which raises it
                chunks.put(exc)

        reader = threading.Thread(target=read, name="audit-reader", daemon=True)
        reader.start()
        while True:
            item = chunks.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            self._apply(item)
        reader.join()

    def _prepare(self, logs: list[Any]) -> Iterator[_Chunk]:
        """Decode a page and fetch what its checks need, in chunks cut at transaction boundaries."""
        events: list[Event] = []
        unknown: list[str] = []
        for log in logs:
            if checksum(log["address"]) != self.escrow or log.get("removed"):
                continue
            event = self.abi.decode_log(log)
            if event is None:
                unknown.append(log["topics"][0] if log.get("topics") else "anonymous")
                continue
            events.append(event)
        pieces: list[list[Event]] = []
        for event in events:
            if not pieces or (len(pieces[-1]) >= _CHUNK_EVENTS and pieces[-1][-1].tx != event.tx):
                pieces.append([])
            pieces[-1].append(event)
        if not pieces:
            yield _Chunk([], {}, {}, unknown)
        for number, piece in enumerate(pieces):
            needed = [
                e.tx
                for e in piece
                if e.name in _NEEDS_CALLDATA
                and (
                    not self.focus_only
                    or e.args.get("orderId") is None
                    or _b32(e.args["orderId"]) == self.focus
                )
            ]
            timed = {e.block for e in piece if e.name in _TIMED_EVENTS}
            if self.grace is not None:
                timed |= {e.block for e in piece if e.name == "OrderSettled"}
            yield _Chunk(
                piece,
                self.reader.transactions(needed),
                self.reader.block_timestamps(sorted(timed)),
                unknown if number == 0 else [],
            )

    def _apply(self, chunk: _Chunk) -> None:
        assert self.state is not None
        for topic in chunk.unknown:
            self.state.unknown_events[topic] = self.state.unknown_events.get(topic, 0) + 1
        events = chunk.events
        settled_txs = {e.tx for e in events if e.name == "OrderSettled"}
        groups: dict[str, list[Event]] = {}
        for event in events:
            groups.setdefault(event.tx, []).append(event)
        for tx_hash, group in groups.items():
            if self._skims and group[0].block > self._skims[0].block:
                self._check_skims()
            if (
                self.focus_only
                and tx_hash not in settled_txs
                and all(e.name == "FulfilmentsAttested" for e in group)
            ):
                continue
            self._transaction(group, chunk.txs.get(tx_hash), chunk.timestamps)

    def _transaction(self, group: list[Event], tx: dict[str, Any] | None, timestamps: dict[int, int]) -> None:
        assert self.state is not None
        call = None
        self._executed_now = []
        if tx is not None and tx.get("to") and checksum(tx["to"]) == self.escrow:
            call = self.abi.decode_call(bytes.fromhex(str(tx["input"])[2:]))
        settled: list[Event] = []
        for event in group:
            name = event.name
            if self._admin(event, timestamps):
                continue
            if name == "OrderPaid":
                self._paid(event, tx, call)
            elif name == "OrderSettled":
                self._ended(event, "settled")
                settled.append(event)
            elif name == "FulfilmentsAttested":
                self._attested(event, settled, tx, call, timestamps)
                settled = []
            elif name == "SettlementSkipped":
                self.state.skipped_settlements += 1
                oid = _b32(event.args["orderId"])
                self._note_step(
                    "settlement skipped",
                    f"a batch skipped the order: reason {event.args.get('reason')}",
                    event,
                    oid,
                )
            elif name == "OrderRefunded":
                if self._ended(event, "refunded"):
                    self._refunded(event, tx, call)
            elif name == "OrderReclaimed":
                if self._ended(event, "reclaimed"):
                    self._reclaimed(event, timestamps)
            elif name == "RefundDeferred":
                books = self._books(event.args["token"])
                buyer = event.args["buyer"]
                books.credits[buyer] = books.credits.get(buyer, 0) + int(event.args["amount"])
                books.deferred += int(event.args["amount"])
                self._note_step(
                    "refund deferred",
                    f"credited to {buyer}'s balance: the transfer failed",
                    event,
                    _b32(event.args["orderId"]),
                )
            elif name == "Withdrawn":
                books = self._books(event.args["token"])
                account, amount = event.args["account"], int(event.args["amount"])
                books.credits[account] = books.credits.get(account, 0) - amount
                books.withdrawn += amount
                if not self.focus_only:
                    self._withdrawn(event, tx)
                if books.credits[account] < 0 and not self.focus_only:
                    self._check(
                        False,
                        "books.overdrawn",
                        "withdraw",
                        f"{account} withdrew {amount} of {event.args['token']}: more than credited",
                        event,
                        None,
                    )
            elif name == "SurplusSkimmed":
                books = self._books(event.args["token"])
                books.skimmed += int(event.args["amount"])
                self._skims.append(event)
            elif name == "FeesWithdrawn":
                books = self._books(event.args["token"])
                amount = int(event.args["amount"])
                books.fees -= amount
                books.fees_withdrawn += amount
                if books.fees < 0 and not self.focus_only:
                    self._check(
                        False,
                        "books.overdrawn",
                        "withdraw fees",
                        f"fees of {event.args['token']}: {amount} withdrawn, more than accrued",
                        event,
                        None,
                    )
            else:
                self.state.unknown_events[name] = self.state.unknown_events.get(name, 0) + 1
        for event in settled:
            oid = _b32(event.args["orderId"])
            self._check(
                False,
                "settle.unattested",
                "attestation",
                "OrderSettled without FulfilmentsAttested in its transaction",
                event,
                oid,
            )

    def _payout_of(self, account: str) -> str:
        """Where ``account``'s withdrawals were paid at this position: its last ``PayoutAddressSet``, else
        (a scan that began after deployment) the contract's view at the block before, else itself."""
        assert self.state is not None
        if account in self.state.admin.payouts:
            return self.state.admin.payouts[account]
        if self.state.seed_block is not None:
            key = (_PAYOUT_OF, account)
            if key not in self._seed_payouts:
                answer = self.reader.call(
                    self.escrow, _PAYOUT_OF + abi_encode(["address"], [account]), self.state.seed_block
                )
                seeded = checksum(answer[12:32]) if answer and len(answer) >= 32 else account
                self._seed_payouts[key] = seeded
            return self._seed_payouts[key]
        return account

    def _withdrawn(self, event: Event, tx: dict[str, Any] | None) -> None:
        """v2: only the account, its payout address or a sweeper authorised then may withdraw, and the
        money goes to the payout address in force. The caller is the transaction's sender, so a call
        made through another contract (a multisig merchant) is listed as unverified (it needs a trace)."""
        assert self.state is not None
        account, to = event.args["account"], event.args["to"]
        payout = self._payout_of(account)
        self._check(
            to == payout,
            "withdraw.wrong-payout",
            "withdrawn to the payout address",
            f"{account}'s withdrawal of {event.args['amount']} {event.args['token']} went to {to}; "
            f"its payout address then was {payout}",
            event,
            None,
        )
        if tx is None or not tx.get("to") or checksum(tx["to"]) != self.escrow:
            self.state.unverified.append(
                {
                    "order_id": None,
                    "event": event.name,
                    "block": event.block,
                    "tx": event.tx,
                    "why": f"{account}'s withdrawal went through another contract: its caller needs a trace",
                }
            )
            return
        caller = checksum(tx["from"])
        self._check(
            caller in (account, payout) or self._authorised("sweeper", caller),
            "withdraw.unauthorised-caller",
            "withdrawal caller",
            f"{caller} withdrew {account}'s {event.args['token']}: neither the account, its payout address "
            f"{payout} nor an authorised sweeper at block {event.block}",
            event,
            None,
        )

    def _books(self, token: str) -> TokenBooks:
        assert self.state is not None
        return self.state.books.setdefault(checksum(token), TokenBooks())

    # ------------------------------------------------------------------ orders

    def _paid(self, event: Event, tx: dict[str, Any] | None, call: Any) -> None:
        assert self.state is not None
        args = event.args
        oid = _b32(args["orderId"])
        if oid in self.state.orders:
            self._check(
                False,
                "pay.duplicate",
                "paid once",
                f"paid again (first at block {self.state.orders[oid].paid_block})",
                event,
                oid,
            )
            return
        record = OrderRecord(
            order_id=oid,
            buyer=args["buyer"],
            merchant=args["merchant"],
            token=args["token"],
            amount=int(args["amount"]),
            fee_bps=int(args["feeBps"]),
            quote_expiry=int(args["quoteExpiry"]),
            deadline=int(args["fulfilmentDeadline"]),
            sku_hash=_b32(args["skuHash"]),
            account_commitment=_b32(args["accountCommitment"]),
            quote_signer=args["quoteSigner"],
            paid_block=event.block,
            paid_tx=event.tx,
        )
        self.state.orders[oid] = record
        books = self._books(record.token)
        books.open += record.amount
        books.paid += record.amount
        self._note_step(
            "paid",
            f"{record.amount} of {record.token} by {record.buyer} for {record.merchant}, "
            f"fee {record.fee_bps} bps, deadline {record.deadline}",
            event,
            oid,
        )
        try:
            order = protocol.Order.from_event(args)
        except protocol.ProtocolError as exc:
            self._check(False, "pay.invalid-order", "order values", str(exc), event, oid)
            return
        admin = self.state.admin
        self._check(
            self._authorised("token", record.token),
            "pay.token-not-allowed",
            "token allowed",
            f"token {record.token} allowed at block {event.block}",
            event,
            oid,
        )
        cap = admin.fee_cap
        self._check(
            cap is None or record.fee_bps <= cap,
            "pay.fee-above-cap",
            "fee within cap",
            f"feeBps {record.fee_bps}, fee cap in force {cap}",
            event,
            oid,
        )
        self._check(
            self._authorised("quote", record.quote_signer),
            "pay.quote-signer-unauthorised",
            "quote signer authorised",
            f"quote signer {record.quote_signer} at block {event.block}",
            event,
            oid,
        )
        if tx is None or call is None or call.name not in ("pay", "payWithPermit"):
            self._unverified(
                oid, event, "the pay call did not go to the escrow directly: its calldata needs a trace"
            )
            return
        same = (
            _order_matches(call.args["order"], record)
            and checksum(call.args["quoteSigner"]) == record.quote_signer
        )
        if not self._check(
            same,
            "pay.calldata-mismatch",
            "pay calldata",
            "the pay calldata carries the order and quote signer of OrderPaid",
            event,
            oid,
        ):
            return
        signature = bytes(call.args["quoteSignature"])
        kind = "eoa" if self._quotes.recovers(order, signature, record.quote_signer) else None
        if kind is None:  # not an EOA signature of this order: the protocol's encoder, then EIP-1271
            message = protocol.quote_typed_data(self.domain, order)
            kind = self._signed(message, signature, record.quote_signer, event.block)
        self._check(
            kind is not None,
            "pay.quote-signature",
            "quote signature",
            f"quote signature recovers to {record.quote_signer} ({kind or 'no'})",
            event,
            oid,
        )

    def _unverified(self, oid: str, event: Event, why: str) -> None:
        assert self.state is not None
        self.state.unverified.append(
            {"order_id": oid, "event": event.name, "block": event.block, "tx": event.tx, "why": why}
        )
        if oid == self.focus:
            self.steps.append(Step(event.name, False, why, event.block, event.tx, "unverified"))

    def _ended(self, event: Event, status: str) -> bool:
        """Lifecycle: the order was paid and still open; it is now ``status``. False if it was not open."""
        assert self.state is not None
        oid = _b32(event.args["orderId"])
        record = self.state.orders.get(oid)
        if not self._check(
            record is not None, "end.unpaid", status, f"{event.name} for an order never paid", event, oid
        ):
            return False
        assert record is not None
        if not self._check(
            record.status == "open",
            "end.twice",
            f"{status} once",
            f"{event.name}, but the order was already {record.status} at block {record.ended_block}",
            event,
            oid,
        ):
            return False
        record.status, record.ended_block, record.ended_tx = status, event.block, event.tx
        books = self._books(record.token)
        books.open -= record.amount
        if status == "settled":
            record.receipt_hash = _b32(event.args["receiptHash"])
            record.fulfilled_at = int(event.args["fulfilledAt"])
            books.settled += record.amount
            books.fees += record.fee
            books.fees_earned += record.fee
            books.credits[record.merchant] = (
                books.credits.get(record.merchant, 0) + record.amount - record.fee
            )
        elif status == "refunded":
            record.reason_code = int(event.args["reasonCode"])
            record.signer = ",".join(event.args["signers"])
            books.refunded += record.amount
        else:
            record.signer = event.args.get("caller")
            books.reclaimed += record.amount
        return True

    def _attested(
        self,
        event: Event,
        settled: list[Event],
        tx: dict[str, Any] | None,
        call: Any,
        timestamps: dict[int, int],
    ) -> None:
        assert self.state is not None
        signers, digest = list(event.args["signers"]), bytes(event.args["digest"])
        ids = [_b32(e.args["orderId"]) for e in settled]
        if self.focus_only and self.focus not in ids:
            return

        def each(passed: bool, rule: str, step: str, detail: str) -> bool:
            ok = True
            for e, oid in zip(settled, ids, strict=True):
                ok = self._check(passed, rule, step, detail, e, oid) and ok
            return ok

        each(
            self.focus_only or int(event.args["orders"]) == len(settled),
            "settle.count-mismatch",
            "attested count",
            f"FulfilmentsAttested.orders {event.args['orders']}, OrderSettled events {len(settled)}",
        )
        self._quorum(
            signers, event, lambda passed, rule, step, detail: each(passed, "settle." + rule, step, detail)
        )
        if call is None or call.name not in ("settle", "settleBatch"):
            for e, oid in zip(settled, ids, strict=True):
                if tx is not None and tx.get("to") and checksum(tx["to"]) != self.escrow:
                    self._unverified(oid, e, "settled through another contract: the proof needs a trace")
                else:
                    self._check(
                        False,
                        "settle.calldata-mismatch",
                        "settle calldata",
                        "the transaction is not settle/settleBatch",
                        e,
                        oid,
                    )
            return
        if call.name == "settle":
            refs, fulfilments = [call.args["order"]], [call.args["fulfilment"]]
        else:
            refs, fulfilments = list(call.args["orders"]), list(call.args["fulfilments"])
        named = [checksum(a) for a in call.args["signers"]]
        if not each(
            named == signers and len(refs) == len(fulfilments),
            "settle.calldata-mismatch",
            "settle calldata",
            f"calldata names signers {named}; FulfilmentsAttested names {signers}",
        ):
            return
        try:
            leaves = [
                protocol.Fulfilment(bytes(r[0]), bytes(f[0]), int(f[1]))
                for r, f in zip(refs, fulfilments, strict=True)
            ]
            message = (
                protocol.fulfilment_typed_data(self.domain, leaves[0])
                if call.name == "settle"
                else protocol.batch_typed_data(self.domain, leaves)
            )
        except protocol.ProtocolError as exc:
            each(False, "settle.calldata-mismatch", "settle calldata", str(exc))
            return
        rebuilt = keccak(b"\x19" + message.version + message.header + message.body)
        if not each(
            rebuilt == digest,
            "settle.digest-mismatch",
            "proof digest",
            f"rebuilt {_b32(rebuilt)}, attested {_b32(digest)}",
        ):
            return
        signatures = [bytes(sig) for sig in call.args["signatures"]]
        bad = self._bad_signatures(message, signers, signatures, event.block)
        each(
            not bad,
            "settle.signature",
            "proof signatures",
            f"signed by {', '.join(signers)} over {_b32(digest)}"
            + (f"; not verified for {', '.join(bad)}" if bad else ""),
        )
        index = {_b32(bytes(r[0])): i for i, r in enumerate(refs)}
        for e, oid in zip(settled, ids, strict=True):
            record = self.state.orders.get(oid)
            if record is None:
                continue
            record.signer = ",".join(signers)
            i = index.get(oid)
            if not self._check(
                i is not None,
                "settle.calldata-mismatch",
                "order in calldata",
                "the settled order is in the calldata",
                e,
                oid,
            ):
                continue
            assert i is not None
            self._check(
                _ref_matches(refs[i], record),
                "settle.order-mismatch",
                "committed fields",
                "the settled OrderRef equals the order as paid",
                e,
                oid,
            )
            self._check(
                (bytes(fulfilments[i][0]), int(fulfilments[i][1]))
                == (bytes(e.args["receiptHash"]), int(e.args["fulfilledAt"])),
                "settle.fulfilment-mismatch",
                "fulfilment",
                f"receipt hash {record.receipt_hash}, fulfilled at {record.fulfilled_at}",
                e,
                oid,
            )
            self._check(
                record.fulfilled_at is not None and record.fulfilled_at <= record.deadline,
                "settle.after-deadline",
                "fulfilled by the deadline",
                f"fulfilledAt {record.fulfilled_at}, deadline {record.deadline}",
                e,
                oid,
            )
            if self.grace is not None and e.block in timestamps:
                closes = record.deadline + self.grace
                self._check(
                    timestamps[e.block] <= closes,
                    "settle.window-closed",
                    "within the settlement window",
                    f"settled at {timestamps[e.block]}, window closed at {closes}",
                    e,
                    oid,
                )
            self._note_step("money", f"merchant {record.amount - record.fee}, fee {record.fee}", e, oid)

    def _refunded(self, event: Event, tx: dict[str, Any] | None, call: Any) -> None:
        assert self.state is not None
        oid = _b32(event.args["orderId"])
        record = self.state.orders[oid]
        signers, reason = list(event.args["signers"]), int(event.args["reasonCode"])
        self._quorum(
            signers,
            event,
            lambda passed, rule, step, detail: self._check(
                passed, "refund." + rule, step, detail, event, oid
            ),
        )
        if call is None or call.name != "refund":
            if tx is not None and tx.get("to") and checksum(tx["to"]) != self.escrow:
                self._unverified(
                    oid, event, "refunded through another contract: the authorisation needs a trace"
                )
            else:
                self._check(
                    False,
                    "refund.calldata-mismatch",
                    "refund calldata",
                    "the transaction is not refund",
                    event,
                    oid,
                )
            return
        order = call.args["order"]
        same = (
            _b32(bytes(order[0])) == oid
            and _order_matches(order, record)
            and int(call.args["reasonCode"]) == reason
            and [checksum(a) for a in call.args["signers"]] == signers
        )
        if not self._check(
            same,
            "refund.calldata-mismatch",
            "refund calldata",
            f"the refund calldata carries the paid order, reason {reason} and signers {signers}",
            event,
            oid,
        ):
            return
        message = protocol.refund_typed_data(self.domain, bytes.fromhex(oid[2:]), reason)
        bad = self._bad_signatures(
            message, signers, [bytes(sig) for sig in call.args["signatures"]], event.block
        )
        self._check(
            not bad,
            "refund.signature",
            "refund signatures",
            f"signed by {', '.join(signers)}" + (f"; not verified for {', '.join(bad)}" if bad else ""),
            event,
            oid,
        )

    def _reclaimed(self, event: Event, timestamps: dict[int, int]) -> None:
        assert self.state is not None
        oid = _b32(event.args["orderId"])
        record = self.state.orders[oid]
        closes = record.deadline + (self.grace or 0)
        at = timestamps.get(event.block)
        self._check(
            at is not None and at > closes,
            "reclaim.before-deadline",
            "reclaimed after the deadline",
            f"reclaimed at {at}, deadline {record.deadline}"
            + (f" + grace {self.grace}" if self.grace else ""),
            event,
            oid,
        )

    def _quorum(self, signers: list[str], event: Event, check: Callable[[bool, str, str, str], Any]) -> None:
        """k-of-n (protocol v2): the signers an event names are strictly ascending (so distinct), each an
        oracle signer authorised at this position, and at least the threshold in force."""
        assert self.state is not None
        unauthorised = [s for s in signers if not self._authorised("oracle", s)]
        check(
            not unauthorised,
            "signer-unauthorised",
            "oracle signers authorised",
            f"oracle signers {', '.join(signers) or '(none)'} at block {event.block}"
            + (f"; not authorised: {', '.join(unauthorised)}" if unauthorised else ""),
        )
        ascending = all(int(a, 16) < int(b, 16) for a, b in itertools.pairwise(signers))
        distinct = len({s for s in signers if s not in unauthorised}) if ascending else 0
        threshold = self._threshold()
        check(
            ascending and distinct >= threshold,
            "below-threshold",
            "signature threshold",
            f"{distinct} distinct authorised signers, threshold {threshold} in force at block {event.block}"
            + ("" if ascending else " (signers not strictly ascending)"),
        )

    def _threshold(self) -> int:
        assert self.state is not None
        return self.state.admin.threshold

    def _bad_signatures(
        self, message: SignableMessage, signers: list[str], signatures: list[bytes], block: int
    ) -> list[str]:
        """The signers whose signature does not verify (a missing signature counts as not verified)."""
        if len(signatures) != len(signers):
            return [
                *signers[len(signatures) :],
                *(["(extra signature)"] if len(signatures) > len(signers) else []),
            ]
        return [
            s
            for s, sig in zip(signers, signatures, strict=True)
            if self._signed(message, sig, s, block) is None
        ]

    def _signed(self, message: SignableMessage, signature: bytes, signer: str, block: int) -> str | None:
        """'eoa' if the signature recovers to ``signer``; 'erc1271' if the contract ``signer`` accepts it
        at ``block``; None otherwise."""
        try:
            if protocol.recover_signer(message, signature) == signer:
                return "eoa"
        except Exception:
            pass
        digest = keccak(b"\x19" + message.version + message.header + message.body)
        answer = self.reader.call(
            signer, _ERC1271 + abi_encode(["bytes32", "bytes"], [digest, signature]), block
        )
        return "erc1271" if answer is not None and answer[:4] == _ERC1271 else None

    # ------------------------------------------------------------------ money

    def _token_balance(self, token: str, block: int) -> int | None:
        if token == protocol.NATIVE_TOKEN:
            return self.reader.eth_balance(self.escrow, block)
        answer = self.reader.call(token, _ERC20_BALANCE_OF + abi_encode(["address"], [self.escrow]), block)
        return int.from_bytes(answer[:32], "big") if answer and len(answer) >= 32 else None

    def _check_skims(self) -> None:
        """Each skim's block, read to its end: the escrow still holds at least what it owes of that token
        (a skim may take only the surplus). The books are then exactly those of the end of that block."""
        assert self.state is not None
        for event in {(e.block, e.args["token"]): e for e in self._skims}.values():
            token = event.args["token"]
            actual = self._token_balance(token, event.block)
            owed = self._books(token).liabilities
            if actual is None:
                self.state.notes.append(f"block {event.block}: the balance of {token} could not be read")
                continue
            self._check(
                actual >= owed,
                "skim.below-owed",
                "skim left what is owed",
                f"after skimming {token} at block {event.block} the escrow holds {actual}, owes {owed}",
                event,
                None,
            )
        self._skims = []

    def _balances(self, block: int, *, final: bool) -> dict[str, int]:
        """Contract balance against what it owes, per token; returns the surplus per token."""
        assert self.state is not None
        surplus: dict[str, int] = {}
        tokens = set(self.state.books) | {t for t, allowed in self.state.admin.tokens.items()}
        for token in sorted(tokens):
            books = self._books(token)
            actual = self._token_balance(token, block)
            if actual is None:
                self.state.notes.append(
                    f"block {block}: the balance of {token} could not be read (archive node?)"
                )
                continue
            owed = books.liabilities
            self.state.balance_checks.append(
                {
                    "block": block,
                    "token": token,
                    "balance": str(actual),
                    "owed": str(owed),
                    "surplus": str(actual - owed),
                }
            )
            if actual < owed:
                self.state.violations.append(
                    Violation(
                        "balance.shortfall",
                        f"{token}: holds {actual}, owes {owed} "
                        f"(open {books.open}, balances {sum(books.credits.values())}, fees {books.fees})",
                        block,
                    )
                )
            elif final and actual > owed:
                surplus[token] = actual - owed
        if len(self.state.balance_checks) > 1000:  # keep the state file bounded: the last checks only
            del self.state.balance_checks[:-1000]
        return surplus

    def _views(self, block: int) -> None:
        """The contract's own balanceOf/feeBalance agree with the books rebuilt from events."""
        assert self.state is not None
        queries: list[tuple[str, str | None, bytes, int]] = []
        for token, books in sorted(self.state.books.items()):
            queries.append((token, None, _VIEW_FEE_BALANCE + abi_encode(["address"], [token]), books.fees))
            for account, amount in sorted(books.credits.items()):
                queries.append(
                    (
                        token,
                        account,
                        _VIEW_BALANCE_OF + abi_encode(["address", "address"], [account, token]),
                        amount,
                    )
                )
        if self._uint_view(_OWED + abi_encode(["address"], [protocol.NATIVE_TOKEN])) is not None:
            for token, books in sorted(self.state.books.items()):  # protocol v2: the escrow's own count
                queries.append((token, "*owed*", _OWED + abi_encode(["address"], [token]), books.liabilities))
        answers = self.reader.many(
            "eth_call",
            [[{"to": self.escrow, "data": "0x" + data.hex()}, hex(block)] for _, _, data, _ in queries],
        )
        for (token, holder, _, expected), answer in zip(queries, answers, strict=True):
            value = int(answer, 16) if isinstance(answer, str) and len(answer) > 2 else None
            if holder == "*owed*":
                # v2: refunded and reclaimed orders stay in owed() until someone reconciles them (a call
                # with no event), so owed() may exceed the books by at most those orders, never fall short.
                books = self.state.books[token]
                ceiling = expected + books.refunded + books.reclaimed
                if value is None or not expected <= value <= ceiling:
                    self.state.violations.append(
                        Violation(
                            "books.view-mismatch",
                            f"owed({token}) is {value}; the events give {expected} (up to {ceiling} before "
                            "refunded and reclaimed orders are reconciled)",
                            block,
                        )
                    )
                continue
            what = (
                f"feeBalance({token})"
                if holder is None
                else f"owed({token})"
                if holder == "*owed*"
                else f"balanceOf({holder}, {token})"
            )
            if value != expected:
                self.state.violations.append(
                    Violation("books.view-mismatch", f"{what} is {value}; the events give {expected}", block)
                )


class _QuoteDigests:
    """Quote digests at the speed of one keccak, for the one signature every order carries.

    ``protocol.quote_typed_data`` rebuilds the domain separator and the type string for every order
    (about 1 ms). ``Order`` is a static struct, so its EIP-712 ``hashStruct`` is
    ``keccak256(abi.encode(typeHash, fields...))``: the type comes from ``protocol.quote_types()`` and
    the domain separator from the protocol's own typed data, and the first order of every audit checks
    that this digest equals the protocol's; if it ever differs the fast path is switched off.
    """

    def __init__(self, domain: protocol.EscrowDomain) -> None:
        fields = protocol.quote_types()["Order"]
        self.domain = domain
        self.types = ["bytes32", *(f["type"] for f in fields)]
        self.type_hash = keccak(text="Order(" + ",".join(f"{f['type']} {f['name']}" for f in fields) + ")")
        self.separator = b""
        self.trusted: bool | None = None

    def _fast(self, order: protocol.Order) -> bytes:
        body = keccak(abi_encode(self.types, [self.type_hash, *order.as_tuple()]))
        return keccak(b"\x19\x01" + self.separator + body)

    def digest(self, order: protocol.Order) -> bytes | None:
        """The quote's digest; None once the fast path has been found to disagree with the protocol."""
        if self.trusted is None:
            message = protocol.quote_typed_data(self.domain, order)
            self.separator = bytes(message.header)
            expected = keccak(b"\x19" + message.version + message.header + message.body)
            self.trusted = self._fast(order) == expected
            return expected
        return self._fast(order) if self.trusted else None

    def recovers(self, order: protocol.Order, signature: bytes, signer: str) -> bool:
        """True if ``signature`` is a 65-byte ECDSA signature by ``signer`` over the order's quote."""
        digest = self.digest(order)
        if digest is None or len(signature) != 65 or signature[64] not in (27, 28):
            return False
        try:
            key = keys.Signature(signature_bytes=signature[:64] + bytes([signature[64] - 27]))
            return checksum(key.recover_public_key_from_msg_hash(digest).to_checksum_address()) == signer
        except (BadSignature, ValueError):
            return False


def _ref_matches(ref: Any, record: OrderRecord) -> bool:
    details = keccak(
        abi_encode(
            ["address", "uint48", "bytes32", "bytes32"],
            [
                record.buyer,
                record.quote_expiry,
                bytes.fromhex(record.sku_hash[2:]),
                bytes.fromhex(record.account_commitment[2:]),
            ],
        )
    )
    return (
        _b32(bytes(ref[0])) == record.order_id
        and checksum(ref[1]) == record.merchant
        and checksum(ref[2]) == record.token
        and int(ref[3]) == record.amount
        and int(ref[4]) == record.fee_bps
        and int(ref[5]) == record.deadline
        and bytes(ref[6]) == details
    )


def _order_matches(order: Any, record: OrderRecord) -> bool:
    return (
        _b32(bytes(order[0])) == record.order_id
        and checksum(order[1]) == record.buyer
        and checksum(order[2]) == record.merchant
        and checksum(order[3]) == record.token
        and int(order[4]) == record.amount
        and int(order[5]) == record.fee_bps
        and int(order[6]) == record.quote_expiry
        and int(order[7]) == record.deadline
        and _b32(bytes(order[8])) == record.sku_hash
        and _b32(bytes(order[9])) == record.account_commitment
    )


def _word(value: str | int) -> str:
    """An admin change's ``bytes32 value`` as hex: an address left-padded, a number big-endian."""
    raw = bytes.fromhex(value[2:]).rjust(32, b"\0") if isinstance(value, str) else value.to_bytes(32, "big")
    return hexstr(raw)


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    """Event arguments as JSON values (bytes as hex, big integers as strings)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, bytes):
            out[key] = hexstr(value)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
            out[key] = str(value)
        else:
            out[key] = value
    return out

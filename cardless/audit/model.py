"""What the audit knows after reading a range of blocks: orders, admin state, books and violations.

Everything here round-trips through JSON (``--state FILE``), so a daily audit resumes where the last one
stopped with the same running totals. Amounts are integers in base units; in JSON they are decimal
strings, so no reader (JavaScript's doubles) rounds a wei.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

__all__ = [
    "RULES",
    "STATE_FORMAT",
    "AdminState",
    "AuditState",
    "OrderRecord",
    "Step",
    "TokenBooks",
    "Violation",
]

STATE_FORMAT: Final = "cardless-audit-state/1"

# Every rule the audit can report, with what it means. docs/audit.md lists the same table.
RULES: Final[dict[str, str]] = {
    "pay.duplicate": "an order id was paid more than once",
    "pay.invalid-order": "the paid order breaks the protocol's value rules (amount, fee, deadline)",
    "pay.token-not-allowed": "paid in a token that was not on the allow-list at that block",
    "pay.fee-above-cap": "the order's feeBps is above the fee cap in force when it was paid",
    "pay.quote-signer-unauthorised": "the named quote signer was not authorised at that block",
    "pay.calldata-mismatch": "the pay calldata differs from the OrderPaid event",
    "pay.quote-signature": "the quote signature does not verify for the named quote signer",
    "end.unpaid": "an order was settled, refunded or reclaimed without ever being paid",
    "end.twice": "an order ended (settled, refunded, reclaimed) more than once",
    "settle.unattested": "OrderSettled without a FulfilmentsAttested in the same transaction",
    "settle.count-mismatch": "FulfilmentsAttested.orders differs from the OrderSettled events it covers",
    "settle.signer-unauthorised": "the proof's signer was not an authorised oracle signer at that block",
    "settle.calldata-mismatch": "the settle calldata is not settle/settleBatch, or names another signer",
    "settle.digest-mismatch": "the digest rebuilt from calldata differs from FulfilmentsAttested.digest",
    "settle.signature": "the proof's signature does not verify for its signer",
    "settle.order-mismatch": "the settled OrderRef differs from the order as paid",
    "settle.fulfilment-mismatch": "the calldata fulfilment differs from the OrderSettled event",
    "settle.after-deadline": "the proof's fulfilledAt is after the order's fulfilment deadline",
    "settle.window-closed": "settled after fulfilmentDeadline + SETTLEMENT_GRACE (protocol v2)",
    "refund.signer-unauthorised": "the refund's signer was not an authorised oracle signer at that block",
    "refund.calldata-mismatch": "the refund calldata is missing or differs from the paid order or the event",
    "refund.signature": "the refund authorisation does not verify for its signer",
    "reclaim.before-deadline": "reclaimed before the deadline (v2: before the settlement window closed)",
    "withdraw.unauthorised-caller": "a withdrawal was sent by neither the account, its payout address nor "
    "a sweeper authorised at that block",
    "withdraw.wrong-payout": "a withdrawal was paid somewhere other than the account's payout address then",
    "skim.below-owed": "a SurplusSkimmed left the escrow holding less of a token than it owes (protocol v2)",
    "admin.unscheduled-change": "a timelocked change (adding a signer, fee recipient, raising the fee cap, "
    "threshold) took effect without a matching announced change executed after its delay (protocol v2)",
    "admin.executed-early": "an announced change was executed before its eta (protocol v2)",
    "admin.executed-expired": "an announced change was executed after eta + ADMIN_GRACE (protocol v2)",
    "admin.delay-too-short": "a change was announced with an eta sooner than ADMIN_DELAY (protocol v2)",
    "admin.schedule-mismatch": "an AdminChangeScheduled id is not keccak256(abi.encode(action, value, eta))",
    "settle.below-threshold": "fewer distinct authorised oracle signers than the threshold in force, or "
    "signers not strictly ascending (protocol v2)",
    "refund.below-threshold": "a refund with fewer distinct authorised oracle signers than the threshold in "
    "force, or signers not strictly ascending (protocol v2)",
    "books.overdrawn": "more was withdrawn for an account or the fees than was credited to it",
    "books.view-mismatch": "the contract's balanceOf/feeBalance differs from the books rebuilt from events",
    "balance.shortfall": "the contract holds less of a token than it owes (open escrow + balances + fees)",
    "receipt.unknown-order": "a receipt names an order that was never paid on this escrow",
    "receipt.not-settled": "a receipt names an order that was not settled",
    "receipt.hash-mismatch": "the receipt's RFC 8785 keccak256 differs from OrderSettled.receiptHash",
    "receipt.account-commitment": "the account and salt (or the receipt's commitment) do not give the "
    "order's accountCommitment",
}


def _amount(value: int) -> str:
    return str(value)


@dataclasses.dataclass
class Violation:
    rule: str
    evidence: str
    block: int | None = None
    tx: str | None = None
    order_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "rule": self.rule,
            "evidence": self.evidence,
            "block": self.block,
            "tx": self.tx,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Violation:
        return cls(doc["rule"], doc["evidence"], doc.get("block"), doc.get("tx"), doc.get("order_id"))


@dataclasses.dataclass
class Step:
    """One step of ``cardless audit order``: what was checked, and whether it passed."""

    step: str
    passed: bool
    detail: str
    block: int | None = None
    tx: str | None = None
    rule: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class OrderRecord:
    order_id: str
    buyer: str
    merchant: str
    token: str
    amount: int
    fee_bps: int
    quote_expiry: int
    deadline: int
    sku_hash: str
    account_commitment: str
    quote_signer: str
    paid_block: int
    paid_tx: str
    status: str = "open"  # open | settled | refunded | reclaimed
    ended_block: int | None = None
    ended_tx: str | None = None
    signer: str | None = None  # who proved the settlement or authorised the refund; the caller of a reclaim
    receipt_hash: str | None = None
    fulfilled_at: int | None = None
    reason_code: int | None = None

    @property
    def fee(self) -> int:
        return self.amount * self.fee_bps // 10_000

    def as_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["amount"] = _amount(self.amount)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OrderRecord:
        return cls(**{**doc, "amount": int(doc["amount"])})


@dataclasses.dataclass
class TokenBooks:
    """Per token, what the escrow owes, rebuilt from events alone."""

    open: int = 0  # paid and not yet ended
    credits: dict[str, int] = dataclasses.field(default_factory=dict)  # merchant and buyer balances
    fees: int = 0  # fee balance
    paid: int = 0
    settled: int = 0  # order amounts settled (merchant share + fee)
    fees_earned: int = 0
    refunded: int = 0
    reclaimed: int = 0
    deferred: int = 0  # refunds credited to a buyer's balance instead of sent
    withdrawn: int = 0
    fees_withdrawn: int = 0
    skimmed: int = 0  # protocol v2: surplus paid to the fee recipient (never owed to anyone)

    @property
    def liabilities(self) -> int:
        return self.open + sum(self.credits.values()) + self.fees

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            k: _amount(v) for k, v in dataclasses.asdict(self).items() if isinstance(v, int)
        }
        doc["credits"] = {account: _amount(v) for account, v in sorted(self.credits.items())}
        doc["liabilities"] = _amount(self.liabilities)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TokenBooks:
        fields = {f.name for f in dataclasses.fields(cls)} - {"credits"}
        books = cls(**{k: int(v) for k, v in doc.items() if k in fields})  # type: ignore[arg-type]
        books.credits = {a: int(v) for a, v in doc.get("credits", {}).items()}
        return books


@dataclasses.dataclass
class AdminState:
    """The owner's settings as of the last event read. A key absent from a map was never set by an
    event; :class:`~cardless.audit.auditor.Auditor` then asks the contract at the block before the scan
    began (a resumed or partial audit), or takes ``False`` for a scan from the deployment."""

    oracle_signers: dict[str, bool] = dataclasses.field(default_factory=dict)
    quote_signers: dict[str, bool] = dataclasses.field(default_factory=dict)
    tokens: dict[str, bool] = dataclasses.field(default_factory=dict)
    fee_cap: int | None = None
    fee_recipient: str | None = None
    threshold: int = 1
    sweepers: dict[str, bool] = dataclasses.field(
        default_factory=dict
    )  # protocol v2: may withdraw for others
    # account -> where its withdrawals are paid (PayoutAddressSet); an account absent pays itself
    payouts: dict[str, str] = dataclasses.field(default_factory=dict)
    paused: bool = False
    owner: str | None = None
    # protocol v2 timelock: changes scheduled and not yet effective or cancelled, by their key
    pending: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AdminState:
        return cls(**doc)


@dataclasses.dataclass
class AuditState:
    """Everything a resumed audit needs: position, orders, admin state, books, findings."""

    escrow: str
    chain_id: int
    version: str
    from_block: int
    next_block: int
    seed_block: int | None = None  # the block before the first one read, when that was not the deployment
    orders: dict[str, OrderRecord] = dataclasses.field(default_factory=dict)
    admin: AdminState = dataclasses.field(default_factory=AdminState)
    books: dict[str, TokenBooks] = dataclasses.field(default_factory=dict)
    violations: list[Violation] = dataclasses.field(default_factory=list)
    unverified: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    admin_log: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    balance_checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped_settlements: int = 0
    unknown_events: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "escrow": self.escrow,
            "chain_id": self.chain_id,
            "version": self.version,
            "from_block": self.from_block,
            "next_block": self.next_block,
            "seed_block": self.seed_block,
            "orders": [o.as_json() for o in self.orders.values()],
            "admin": self.admin.as_json(),
            "books": {token: b.as_json() for token, b in self.books.items()},
            "violations": [v.as_json() for v in self.violations],
            "unverified": self.unverified,
            "admin_log": self.admin_log,
            "balance_checks": self.balance_checks,
            "skipped_settlements": self.skipped_settlements,
            "unknown_events": self.unknown_events,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuditState:
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} file (format {doc.get('format')!r})")
        orders = [OrderRecord.from_json(o) for o in doc["orders"]]
        return cls(
            escrow=doc["escrow"],
            chain_id=int(doc["chain_id"]),
            version=doc["version"],
            from_block=int(doc["from_block"]),
            next_block=int(doc["next_block"]),
            seed_block=doc.get("seed_block"),
            orders={o.order_id: o for o in orders},
            admin=AdminState.from_json(doc["admin"]),
            books={token: TokenBooks.from_json(b) for token, b in doc["books"].items()},
            violations=[Violation.from_json(v) for v in doc["violations"]],
            unverified=list(doc.get("unverified", [])),
            admin_log=list(doc.get("admin_log", [])),
            balance_checks=list(doc.get("balance_checks", [])),
            skipped_settlements=int(doc.get("skipped_settlements", 0)),
            unknown_events=dict(doc.get("unknown_events", {})),
            notes=list(doc.get("notes", [])),
        )

    def totals(self) -> dict[str, int]:
        counts = {"open": 0, "settled": 0, "refunded": 0, "reclaimed": 0}
        for order in self.orders.values():
            counts[order.status] += 1
        return {"orders": len(self.orders), **counts}

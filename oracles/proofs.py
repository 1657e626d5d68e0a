"""Proofs: turn a provider receipt into a signed fulfilment proof, authorise refunds, and assemble
settlement batches (docs/protocol.md).

- The proof's ``fulfilledAt`` is the provider's completion time capped at the chain's clock when the
  proof is signed: a provider clock running ahead must not make the proof claim the future.
- The escrow refuses ``fulfilledAt`` after the order's deadline (``FulfilledAfterDeadline``; a
  ``settleBatch`` skips the entry), so such an order is left out of every batch; the settlement stage
  refunds it (``oracles.settlement``). ``fulfilledAt`` is never moved back to the deadline: the proof
  would attest a time the receipt contradicts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
import tenacity
from eth_account.messages import SignableMessage
from eth_account.signers.local import LocalAccount
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from cardless import protocol
from cardless.ledger.models import Order, OrderState, utcnow
from cardless.ledger.store import candidates, order_from_row
from cardless.ledger.transitions import transition
from cardless.protocol import EscrowDomain, Fulfilment, RefundReason
from oracles.cosigner_wire import (
    FULFILMENTS_PATH,
    REFUND_PATH,
    CoSignerRefusedError,
    CoSignerUnavailableError,
    FulfilmentRequest,
    RefundRequest,
    Refusal,
    sign_headers,
)
from oracles.failpoints import failpoint

__all__ = [
    "Batch",
    "CoSigner",
    "HttpCoSigner",
    "LocalCoSigner",
    "Proofs",
    "assemble_batches",
    "fulfilment_of",
    "proof_fulfilled_at",
]

log = logging.getLogger(__name__)
S = OrderState


def proof_fulfilled_at(completed_at: int, chain_now: int) -> int:
    """The ``fulfilledAt`` a proof signed at ``chain_now`` may claim."""
    return min(completed_at, chain_now)


def fulfilment_of(row: Order) -> Fulfilment:
    assert row.receipt_hash is not None and row.fulfilled_at is not None
    return Fulfilment(
        order_id=protocol.order_id_from_hex(row.id),
        receipt_hash=protocol.hash32_from_hex("receipt_hash", row.receipt_hash),
        fulfilled_at=row.fulfilled_at,
    )


@dataclasses.dataclass(frozen=True)
class Batch:
    """Orders settled by one transaction: ``settle`` for one, ``settleBatch`` for more."""

    rows: tuple[Order, ...]

    @property
    def order_ids(self) -> list[str]:
        return [r.id for r in self.rows]


def assemble_batches(rows: Sequence[Order], max_batch: int) -> list[Batch]:
    """Split signed proofs into batches of at most ``max_batch``, in the given order, leaving out every
    order whose ``fulfilledAt`` is past its deadline (the escrow would revert the batch for it)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    settleable: list[Order] = []
    for row in rows:
        if row.fulfilled_at is None or row.fulfilled_at > row.fulfilment_deadline:
            log.error(
                "order %s was fulfilled at %s, after its deadline %s: it cannot be settled",
                row.id,
                row.fulfilled_at,
                row.fulfilment_deadline,
            )
            continue
        settleable.append(row)
    return [Batch(tuple(settleable[i : i + max_batch])) for i in range(0, len(settleable), max_batch)]


class CoSigner(Protocol):
    """Another oracle proof key, held elsewhere (``oracles.cosigner``: a separate process), asked to sign what
    this oracle posts when the escrow's ``oracleThreshold`` is above 1 (k-of-n). It decides by itself
    whether to sign and may refuse (raise); it returns its address and a 65-byte signature."""

    def sign_fulfilments(self, fulfilments: Sequence[Fulfilment]) -> tuple[str, bytes]:
        """A ``Fulfilment`` proof for one, a ``FulfilmentBatch`` proof for more."""
        ...

    def sign_refund(self, order_id: bytes, reason_code: int) -> tuple[str, bytes]: ...


class LocalCoSigner:
    """A co-signer key in this process (tests, and single-host setups that still want two keys)."""

    def __init__(self, key: LocalAccount, domain: EscrowDomain) -> None:
        self.key, self.domain = key, domain

    def sign_fulfilments(self, fulfilments: Sequence[Fulfilment]) -> tuple[str, bytes]:
        return self.key.address, protocol.sign(self.key.key, fulfilments_message(self.domain, fulfilments))

    def sign_refund(self, order_id: bytes, reason_code: int) -> tuple[str, bytes]:
        message = protocol.refund_typed_data(self.domain, order_id, reason_code)
        return self.key.address, protocol.sign(self.key.key, message)


class _RetryableError(Exception):
    """A failure worth one more attempt: no answer, or the co-signer's 502/503/504."""


class HttpCoSigner:
    """A co-signer in another process (``cardless cosigner``), asked over HTTP (``oracles.cosigner_wire``).

    Each request carries, besides what is signed, where the co-signer checks it: the order's payment
    transaction and the provider that delivered (read from the ledger here). A signing request is
    idempotent (the co-signer's journal accepts the same request again and ECDSA here is deterministic),
    so a request without an answer is retried, at most ``attempts`` times, each with a fresh timestamp and
    nonce. The answer's signature is checked to be the named signer's over the expected message.

    A co-signer that gave no answer is not asked again for ``cooldown`` seconds (``CoSignerUnavailableError``
    at once): a black-holed co-signer must not cost the timeout for every batch of every tick. A refusal
    (``CoSignerRefusedError``) names the orders and why; the same item (the same fulfilment, or the same
    refund and reason) is then refused here without asking for ``refusal_backoff`` seconds, so a refused
    order does not make the co-signer query the chain and the provider every tick. Either way the
    settlement waits for a later tick.
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        sessions: sessionmaker[Session],
        domain: EscrowDomain,
        *,
        timeout: float = 10.0,
        attempts: int = 2,
        cooldown: float = 5.0,
        refusal_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.sessions = sessions
        self.domain = domain
        self.attempts = attempts
        self.cooldown = cooldown
        self._down_until = 0.0
        self.refusal_backoff = refusal_backoff
        self._refused: dict[tuple[Any, ...], tuple[float, str]] = {}
        """What the co-signer refused, by the exact request item, until when it is not asked again."""
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            transport=transport,
            follow_redirects=False,
            headers={"Content-Type": "application/json"},
        )

    def __repr__(self) -> str:
        return f"HttpCoSigner({self.url})"

    def close(self) -> None:
        self.client.close()

    def sign_fulfilments(self, fulfilments: Sequence[Fulfilment]) -> tuple[str, bytes]:
        keys = {"0x" + f.order_id.hex(): ("fulfilment", f) for f in fulfilments}
        self._refused_recently(keys)
        context = self._context([f.order_id for f in fulfilments])
        requests = [FulfilmentRequest(f, *context["0x" + f.order_id.hex()]) for f in fulfilments]
        body = {"fulfilments": [r.as_json() for r in requests]}
        return self._ask(FULFILMENTS_PATH, body, fulfilments_message(self.domain, fulfilments), keys)

    def sign_refund(self, order_id: bytes, reason_code: int) -> tuple[str, bytes]:
        keys = {"0x" + order_id.hex(): ("refund", order_id, reason_code)}
        self._refused_recently(keys)
        paid_tx, _ = self._context([order_id])["0x" + order_id.hex()]
        body = RefundRequest(order_id, reason_code, paid_tx).as_json()
        message = protocol.refund_typed_data(self.domain, order_id, reason_code)
        return self._ask(REFUND_PATH, body, message, keys)

    def _refused_recently(self, keys: dict[str, tuple[Any, ...]]) -> None:
        """Raise, without asking, for the items the co-signer refused within ``refusal_backoff``: the
        settlement stage runs every tick (0.1 s when idle), and each request makes the co-signer query the
        chain and the providers again for an answer that rarely changes that fast."""
        now = time.monotonic()
        self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
        recent = [
            Refusal(
                order_id, f"{self._refused[key][1]} (not asked again for {self._refused[key][0] - now:.0f} s)"
            )
            for order_id, key in keys.items()
            if key in self._refused
        ]
        if recent:
            raise CoSignerRefusedError(recent)

    def _context(self, order_ids: Sequence[bytes]) -> dict[str, tuple[bytes, str]]:
        """Per order: the payment transaction and the provider of its current (delivered) attempt."""
        found: dict[str, tuple[bytes, str]] = {}
        with self.sessions() as session:
            for order_id in order_ids:
                key = "0x" + order_id.hex()
                row = session.get(Order, key)
                if row is None or not row.paid_tx:
                    raise CoSignerRefusedError([Refusal(key, "no payment transaction in the ledger")])
                provider = (row.receipt or {}).get("provider")
                if not isinstance(provider, str):
                    index = row.provider_index
                    provider = row.providers[index] if 0 <= index < len(row.providers) else ""
                found[key] = (protocol.hash32_from_hex("paid_tx", row.paid_tx), provider)
        return found

    def _ask(
        self, path: str, document: dict[str, Any], message: SignableMessage, keys: dict[str, tuple[Any, ...]]
    ) -> tuple[str, bytes]:
        if time.monotonic() < self._down_until:
            raise CoSignerUnavailableError(f"{self.url} did not answer recently; not asked again yet")
        body = json.dumps(document, separators=(",", ":")).encode()
        try:
            reply = self._post(path, body)
        except (_RetryableError, httpx.HTTPError) as exc:
            self._down_until = time.monotonic() + self.cooldown
            raise CoSignerUnavailableError(f"{self.url}{path}: no answer ({exc})") from exc
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        if reply.status_code == 422 and isinstance(answer, dict) and isinstance(answer.get("refused"), list):
            refusals = [
                Refusal(str(r.get("order_id", "?")), str(r.get("reason", "?"))[:200])
                for r in answer["refused"][:200]
                if isinstance(r, dict)
            ]
            until = time.monotonic() + self.refusal_backoff
            for refusal in refusals:
                if refusal.order_id in keys:
                    self._refused[keys[refusal.order_id]] = (until, refusal.reason)
            raise CoSignerRefusedError(refusals)
        if reply.status_code != 200 or not isinstance(answer, dict):
            raise CoSignerUnavailableError(f"{self.url}{path}: HTTP {reply.status_code}")
        try:
            signer = Web3.to_checksum_address(answer["signer"])
            signature = bytes.fromhex(str(answer["signature"]).removeprefix("0x"))
            recovered = protocol.recover_signer(message, signature)
        except Exception as exc:  # anything malformed is not a signature
            raise CoSignerUnavailableError(f"{self.url}{path}: not a signature ({exc})") from exc
        if recovered != signer:
            raise CoSignerUnavailableError(
                f"{self.url}{path}: the signature is not {signer}'s over this message"
            )
        return signer, signature

    def _post(self, path: str, body: bytes) -> httpx.Response:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=0.2, max=1.0),
            retry=tenacity.retry_if_exception_type((_RetryableError, httpx.TransportError)),
            reraise=True,
        ):
            with attempt:
                headers = sign_headers(self.secret, "POST", path, body)
                reply = self.client.post(self.url + path, content=body, headers=headers)
                if reply.status_code in (502, 503, 504):
                    raise _RetryableError(f"HTTP {reply.status_code}")
                return reply
        raise AssertionError("unreachable")  # pragma: no cover


def fulfilments_message(domain: EscrowDomain, fulfilments: Sequence[Fulfilment]) -> SignableMessage:
    """The typed data ``settle`` (one fulfilment) or ``settleBatch`` (more) checks signatures over."""
    if len(fulfilments) == 1:
        return protocol.fulfilment_typed_data(domain, fulfilments[0])
    return protocol.batch_typed_data(domain, fulfilments)


class Proofs:
    """Signs with the proof key (never the gas key)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        proof_key: LocalAccount,
        domain: EscrowDomain,
        cosigners: Sequence[CoSigner] = (),
    ) -> None:
        self.sessions = sessions
        self.proof_key = proof_key
        self.domain = domain
        self.cosigners = list(cosigners)

    def sign_fulfilments(self, chain_now: int) -> int:
        """Stage: sign a fulfilment proof for every succeeded order (one transaction)."""
        changed = 0
        with self.sessions.begin() as session:
            for row in candidates(session, [S.SUCCEEDED], now=utcnow()):
                assert row.receipt_hash is not None and row.fulfilled_at is not None
                fulfilled_at = proof_fulfilled_at(row.fulfilled_at, chain_now)
                fulfilment = Fulfilment(
                    order_id=protocol.order_id_from_hex(row.id),
                    receipt_hash=protocol.hash32_from_hex("receipt_hash", row.receipt_hash),
                    fulfilled_at=fulfilled_at,
                )
                signature = protocol.sign_digest(
                    self.proof_key.key, protocol.fulfilment_digest(self.domain, fulfilment)
                )
                transition(
                    session,
                    row,
                    S.PROOF_PENDING,
                    "fulfilment proof signed",
                    fulfilled_at=fulfilled_at,
                    proof_signature=Web3.to_hex(signature),
                )
                changed += 1
        if changed:
            failpoint("proof.after_sign_commit")
        return changed

    def sign_refunds(self) -> int:
        """Stage: sign a refund authorisation for every order that failed for good (one transaction)."""
        changed = 0
        with self.sessions.begin() as session:
            for row in candidates(session, [S.FAILED_FINAL], now=utcnow()):
                reason = row.refund_reason or int(RefundReason.PROVIDER_REJECTED)
                signature = protocol.sign_digest(
                    self.proof_key.key,
                    protocol.refund_digest(self.domain, protocol.order_id_from_hex(row.id), reason),
                )
                transition(
                    session,
                    row,
                    S.REFUND_PENDING,
                    f"refund authorised (reason {RefundReason(reason).name})",
                    refund_reason=reason,
                    refund_signature=Web3.to_hex(signature),
                )
                changed += 1
        if changed:
            failpoint("refund.after_sign_commit")
        return changed

    def batch_signature(self, batch: Batch) -> bytes:
        """One signature over all of ``batch``'s fulfilments (``FulfilmentBatch``)."""
        fulfilments = [fulfilment_of(r) for r in batch.rows]
        return protocol.sign_digest(self.proof_key.key, protocol.batch_digest(self.domain, fulfilments))

    @staticmethod
    def order_refs(batch: Batch) -> list[protocol.Order]:
        return [order_from_row(r) for r in batch.rows]

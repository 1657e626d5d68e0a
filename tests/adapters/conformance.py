"""The conformance suite every provider adapter passes (the web3.py shared-test-class pattern).

Subclass ``AdapterConformance`` once per adapter and provide two fixtures:

- ``adapter``: the ``ProviderAdapter`` under test, talking to a fresh provider. Give it a short read
  timeout (about a second): the timeout test waits for it.
- ``backend``: a ``ConformanceBackend`` — the provider seen from behind the counter: it arms faults,
  reads the credit ledger and receives callbacks.

The suite checks the rules the oracle builds on (docs/design/simulator-api.md, DESIGN.md "Oracle"):
a repeated key never credits twice; a refusal is FAILED_NOT_CHARGED and says reroute or refund; a
timeout, 5xx or lost reply is UNKNOWN, never a failure, and resolves by querying (and resubmitting
only under the same key); callbacks are authenticated and fresh.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from enum import StrEnum
from typing import Protocol

import anyio
import pytest

from adapters import (
    AccountRejected,
    CallbackRejected,
    ForgedCallback,
    IdempotencyConflict,
    ProviderAdapter,
    ProviderRefused,
    RefundError,
    Refusal,
    RerouteError,
    StaleCallback,
    TopupRequest,
    TopupResult,
    TopupReversed,
    TopupStatus,
)

__all__ = ["AdapterConformance", "Callback", "ConformanceBackend", "Fault", "resolve"]


class Fault(StrEnum):
    """Faults a backend can arm for one order key (each fires once)."""

    TIMEOUT = "timeout"
    """The provider never answers (nothing committed)."""
    ERROR_5XX_BEFORE_COMMIT = "error_5xx_before_commit"
    LOST_AFTER_COMMIT = "lost_after_commit"
    """The provider commits and credits, then the connection drops before the reply."""
    OUT_OF_STOCK = "out_of_stock"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    INVALID_ACCOUNT = "invalid_account"
    ASYNC = "async"
    """The top-up answers PROCESSING, completes shortly after and calls back."""
    FORGED_CALLBACK = "forged_callback"
    """A forged callback precedes the genuine one."""
    DUPLICATE_CALLBACK = "duplicate_callback"
    """The genuine callback is delivered twice."""
    NOT_FOUND_IN_FLIGHT = "not_found_in_flight"
    """A query says NOT_FOUND while the order is still PROCESSING."""


@dataclasses.dataclass(frozen=True)
class Callback:
    raw_body: bytes
    headers: dict[str, str]


class ConformanceBackend(Protocol):
    valid_sku: str
    unknown_sku: str
    valid_account: str
    invalid_account: str
    callback_url: str
    """Where the provider's callbacks reach ``next_callback``."""

    async def arm(self, fault: Fault, *, order_key: str) -> None: ...

    async def credits(self, order_key: str) -> int:
        """How many times the provider actually credited this order (the ledger, not the API)."""
        ...

    async def next_callback(self, timeout: float = 5.0) -> Callback: ...

    async def reverse(self, order_key: str) -> None:
        """Have the provider reverse a credited top-up; raise NotImplementedError if it cannot."""
        ...


async def resolve(adapter: ProviderAdapter, request: TopupRequest, *, attempts: int = 40) -> TopupResult:
    """What the oracle does with UNKNOWN: query by our key; when the provider does not know the order,
    resubmit under the SAME key (safe, the provider is idempotent); wait out PROCESSING."""
    for _ in range(attempts):
        result = await adapter.query(request.order_key, None)
        if result.status is TopupStatus.UNKNOWN:
            try:
                result = await adapter.submit(request)
            except (RerouteError, RefundError) as exc:
                assert exc.result is not None
                return exc.result
        if result.is_final:
            return result
        await anyio.sleep(0.05)
    raise AssertionError(f"{request.order_key} did not resolve; last: {result}")


def _key(label: str) -> str:
    return f"conf-{label}-{uuid.uuid4().hex[:16]}"


class AdapterConformance:
    """Base class; not collected itself (no ``Test`` prefix)."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def adapter(self) -> ProviderAdapter:
        raise NotImplementedError("a conformance subclass provides the `adapter` fixture")

    @pytest.fixture
    def backend(self) -> ConformanceBackend:
        raise NotImplementedError("a conformance subclass provides the `backend` fixture")

    def request(self, backend: ConformanceBackend, label: str, **changes: str | None) -> TopupRequest:
        fields: dict[str, str | None] = {
            "order_key": _key(label),
            "sku": backend.valid_sku,
            "account": backend.valid_account,
            "callback_url": None,
        }
        fields.update(changes)
        return TopupRequest(**fields)  # type: ignore[arg-type]

    # -- validate ---------------------------------------------------------------------------------

    async def test_validate_accepts_a_good_account(self, adapter, backend) -> None:
        validation = await adapter.validate(backend.valid_sku, backend.valid_account)
        assert validation.ok
        assert (validation.sku, validation.account) == (backend.valid_sku, backend.valid_account)
        assert validation.refusal is None

    async def test_validate_refuses_an_invalid_account(self, adapter, backend) -> None:
        validation = await adapter.validate(backend.valid_sku, backend.invalid_account)
        assert not validation.ok
        assert validation.refusal is Refusal.INVALID_ACCOUNT

    async def test_validate_refuses_an_unknown_sku(self, adapter, backend) -> None:
        validation = await adapter.validate(backend.unknown_sku, backend.valid_account)
        assert not validation.ok
        assert validation.refusal is Refusal.UNKNOWN_SKU

    # -- submit -----------------------------------------------------------------------------------

    async def test_submit_success_carries_the_receipt(self, adapter, backend) -> None:
        request = self.request(backend, "ok")
        before = time.time()
        result = await adapter.submit(request)

        assert result.status is TopupStatus.SUCCEEDED
        receipt = result.receipt
        assert receipt is not None
        assert receipt.provider == result.provider != ""
        assert receipt.provider_ref == result.provider_ref != ""
        assert receipt.order_id == result.order_key == request.order_key
        assert (receipt.sku, receipt.account) == (request.sku, request.account)
        assert isinstance(receipt.credited, int) and receipt.credited > 0
        assert before - 120 <= receipt.completed_at <= time.time() + 120
        assert await backend.credits(request.order_key) == 1

    async def test_repeated_submit_returns_the_first_order_and_credits_once(self, adapter, backend) -> None:
        request = self.request(backend, "again")
        first = await adapter.submit(request)
        second = await adapter.submit(request)

        assert first.status is second.status is TopupStatus.SUCCEEDED
        assert second.provider_ref == first.provider_ref
        assert second.receipt == first.receipt
        assert await backend.credits(request.order_key) == 1

    async def test_query_by_key_and_by_provider_ref_agree(self, adapter, backend) -> None:
        request = self.request(backend, "query")
        submitted = await adapter.submit(request)
        by_key = await adapter.query(request.order_key, None)
        by_ref = await adapter.query(None, submitted.provider_ref)
        assert by_key.receipt == by_ref.receipt == submitted.receipt

    async def test_query_of_an_unknown_key_is_unknown_not_failed(self, adapter, backend) -> None:
        result = await adapter.query(_key("never-sent"), None)
        assert result.status is TopupStatus.UNKNOWN

    async def test_same_key_with_other_content_is_an_idempotency_conflict(self, adapter, backend) -> None:
        request = self.request(backend, "conflict")
        await adapter.submit(request)
        with pytest.raises(IdempotencyConflict):
            await adapter.submit(dataclasses.replace(request, account=backend.valid_account + "1"))
        assert await backend.credits(request.order_key) == 1

    # -- refusals: provably not charged -------------------------------------------------------------

    @pytest.mark.parametrize(
        ("fault", "refusal"),
        [
            (Fault.OUT_OF_STOCK, Refusal.OUT_OF_STOCK),
            (Fault.INSUFFICIENT_BALANCE, Refusal.INSUFFICIENT_BALANCE),
        ],
    )
    async def test_refusal_is_not_charged_and_reroutable(self, adapter, backend, fault, refusal) -> None:
        request = self.request(backend, fault.value)
        await backend.arm(fault, order_key=request.order_key)
        with pytest.raises(ProviderRefused) as caught:
            await adapter.submit(request)

        assert isinstance(caught.value, RerouteError)
        assert caught.value.result is not None
        assert caught.value.result.status is TopupStatus.FAILED_NOT_CHARGED
        assert caught.value.result.refusal is refusal
        assert await backend.credits(request.order_key) == 0
        # Asking again never turns a refusal into a success.
        later = await adapter.query(request.order_key, None)
        assert later.status in (TopupStatus.FAILED_NOT_CHARGED, TopupStatus.UNKNOWN)
        if later.status is TopupStatus.FAILED_NOT_CHARGED:
            assert isinstance(later.error(), RerouteError)

    async def test_unknown_sku_is_not_charged_and_reroutable(self, adapter, backend) -> None:
        request = self.request(backend, "sku", sku=backend.unknown_sku)
        with pytest.raises(RerouteError) as caught:
            await adapter.submit(request)
        assert caught.value.result is not None
        assert caught.value.result.refusal is Refusal.UNKNOWN_SKU
        assert await backend.credits(request.order_key) == 0

    async def test_invalid_account_is_final_and_refunds(self, adapter, backend) -> None:
        request = self.request(backend, "account", account=backend.invalid_account)
        with pytest.raises(AccountRejected) as caught:
            await adapter.submit(request)

        assert isinstance(caught.value, RefundError)
        assert caught.value.result is not None
        assert caught.value.result.status is TopupStatus.FAILED_NOT_CHARGED
        assert caught.value.result.refusal is Refusal.INVALID_ACCOUNT
        assert await backend.credits(request.order_key) == 0

    async def test_forced_invalid_account_refusal_refunds(self, adapter, backend) -> None:
        request = self.request(backend, "account-fault")
        await backend.arm(Fault.INVALID_ACCOUNT, order_key=request.order_key)
        with pytest.raises(RefundError):
            await adapter.submit(request)
        assert await backend.credits(request.order_key) == 0

    # -- unknown outcomes: never failed, resolved by our key ------------------------------------------

    async def test_5xx_before_commit_is_unknown_then_resolves_once(self, adapter, backend) -> None:
        request = self.request(backend, "5xx")
        await backend.arm(Fault.ERROR_5XX_BEFORE_COMMIT, order_key=request.order_key)
        first = await adapter.submit(request)
        assert first.status is TopupStatus.UNKNOWN
        assert first.order_key == request.order_key

        resolved = await resolve(adapter, request)
        assert resolved.status is TopupStatus.SUCCEEDED
        assert await backend.credits(request.order_key) == 1

    async def test_lost_reply_after_commit_is_unknown_and_query_finds_the_credit(
        self, adapter, backend
    ) -> None:
        request = self.request(backend, "lost")
        await backend.arm(Fault.LOST_AFTER_COMMIT, order_key=request.order_key)
        first = await adapter.submit(request)
        assert first.status is TopupStatus.UNKNOWN

        queried = await adapter.query(request.order_key, None)
        assert queried.status is TopupStatus.SUCCEEDED
        assert queried.receipt is not None and queried.receipt.order_id == request.order_key
        again = await adapter.submit(request)
        assert again.provider_ref == queried.provider_ref
        assert await backend.credits(request.order_key) == 1

    async def test_timeout_is_unknown_then_resolves_once(self, adapter, backend) -> None:
        request = self.request(backend, "timeout")
        await backend.arm(Fault.TIMEOUT, order_key=request.order_key)
        first = await adapter.submit(request)
        assert first.status is TopupStatus.UNKNOWN

        resolved = await resolve(adapter, request)
        assert resolved.status is TopupStatus.SUCCEEDED
        assert await backend.credits(request.order_key) == 1

    async def test_not_found_while_processing_is_unknown_not_failed(self, adapter, backend) -> None:
        request = self.request(backend, "in-flight")
        await backend.arm(Fault.ASYNC, order_key=request.order_key)
        await backend.arm(Fault.NOT_FOUND_IN_FLIGHT, order_key=request.order_key)
        submitted = await adapter.submit(request)
        assert submitted.status is TopupStatus.PROCESSING

        queried = await adapter.query(request.order_key, None)
        assert queried.status in (TopupStatus.UNKNOWN, TopupStatus.SUCCEEDED)
        if queried.status is TopupStatus.UNKNOWN:
            assert queried.unseen, "a NOT_FOUND must be marked unseen so the oracle can tell it from a 5xx"
        resolved = await resolve(adapter, request)
        assert resolved.status is TopupStatus.SUCCEEDED
        assert await backend.credits(request.order_key) == 1

    # -- asynchronous completion and callbacks ----------------------------------------------------

    async def _async_topup(
        self, adapter, backend, label: str, *faults: Fault
    ) -> tuple[TopupRequest, TopupResult]:
        request = self.request(backend, label, callback_url=backend.callback_url)
        for fault in (Fault.ASYNC, *faults):
            await backend.arm(fault, order_key=request.order_key)
        return request, await adapter.submit(request)

    async def test_async_topup_processes_then_calls_back_genuinely(self, adapter, backend) -> None:
        request, submitted = await self._async_topup(adapter, backend, "callback")
        assert submitted.status is TopupStatus.PROCESSING

        callback = await backend.next_callback()
        result = await adapter.verify_callback(callback.raw_body, callback.headers, time.time())
        assert result.status is TopupStatus.SUCCEEDED
        assert result.receipt is not None and result.receipt.order_id == request.order_key
        assert result.provider_ref == submitted.provider_ref
        queried = await adapter.query(request.order_key, None)
        assert queried.receipt == result.receipt
        assert await backend.credits(request.order_key) == 1

    async def test_forged_callback_is_rejected(self, adapter, backend) -> None:
        request, _ = await self._async_topup(adapter, backend, "forged", Fault.FORGED_CALLBACK)
        outcomes: list[TopupResult | CallbackRejected] = []
        for _ in range(2):
            callback = await backend.next_callback()
            try:
                outcomes.append(
                    await adapter.verify_callback(callback.raw_body, callback.headers, time.time())
                )
            except CallbackRejected as exc:
                outcomes.append(exc)
        assert sum(isinstance(o, ForgedCallback) for o in outcomes) == 1
        genuine = [o for o in outcomes if isinstance(o, TopupResult)]
        assert len(genuine) == 1 and genuine[0].status is TopupStatus.SUCCEEDED
        assert genuine[0].order_key == request.order_key

    async def test_tampered_callback_body_is_rejected(self, adapter, backend) -> None:
        request, _ = await self._async_topup(adapter, backend, "tampered")
        callback = await backend.next_callback()
        tampered = callback.raw_body.replace(request.order_key.encode(), _key("other").encode())
        assert tampered != callback.raw_body
        with pytest.raises(ForgedCallback):
            await adapter.verify_callback(tampered, callback.headers, time.time())
        with pytest.raises(ForgedCallback):
            await adapter.verify_callback(callback.raw_body, {}, time.time())

    async def test_stale_callback_is_rejected(self, adapter, backend) -> None:
        await self._async_topup(adapter, backend, "stale")
        callback = await backend.next_callback()
        # Tolerance windows are minutes; two hours either way is stale for any provider.
        for skew in (7_200, -7_200):
            with pytest.raises(StaleCallback):
                await adapter.verify_callback(callback.raw_body, callback.headers, time.time() + skew)
        assert (await adapter.verify_callback(callback.raw_body, callback.headers, time.time())).is_final

    async def test_duplicate_callbacks_verify_to_the_same_result(self, adapter, backend) -> None:
        await self._async_topup(adapter, backend, "duplicate", Fault.DUPLICATE_CALLBACK)
        first, second = (await backend.next_callback(), await backend.next_callback())
        results = [await adapter.verify_callback(c.raw_body, c.headers, time.time()) for c in (first, second)]
        # De-duplication is the state machine's job; the adapter must just agree with itself.
        assert results[0] == results[1]
        assert results[0].status is TopupStatus.SUCCEEDED

    # -- reversal and balance -----------------------------------------------------------------------

    async def test_reversal_is_reported_and_means_refund(self, adapter, backend) -> None:
        request = self.request(backend, "reverse")
        await adapter.submit(request)
        try:
            await backend.reverse(request.order_key)
        except NotImplementedError:
            pytest.skip("this backend cannot reverse a top-up")
        queried = await adapter.query(request.order_key, None)
        assert queried.status is TopupStatus.REVERSED
        assert isinstance(queried.error(), TopupReversed)
        with pytest.raises(TopupReversed):
            queried.raise_for_status()

    async def test_balance_is_an_integer_that_pays_for_top_ups(self, adapter, backend) -> None:
        before = await adapter.balance()
        assert isinstance(before, int) and not isinstance(before, bool)
        await adapter.submit(self.request(backend, "balance"))
        assert await adapter.balance() < before

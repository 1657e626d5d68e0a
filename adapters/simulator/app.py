"""The simulated provider's HTTP API (docs/design/simulator-api.md) as a FastAPI app.

Provider errors are reply codes, not exceptions: the spec fixes them per endpoint. `_ApiError` exists
only to leave a route early with one of the spec's non-200 replies (400, 401, 403, 404, 409).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from adapters.simulator._state import FaultMode, MerchantKeys, OrderView, SimulatorState
from adapters.simulator.config import SimulatorConfig, default_config
from adapters.simulator.signing import callback_signature, sign_string, verify
from cardless.protocol.jsonlimits import BoundedJsonMiddleware, loads_bounded

__all__ = ["ConnectionDropper", "SimulatorRuntime", "create_app"]

logger = logging.getLogger("adapters.simulator")

# Closes the client connection of the request at this peer address without a reply; True if it did.
ConnectionDropper = Callable[[tuple[str, int]], bool]

_POLL_S = 0.05
_DEFAULT_LATENCY_MS = 1_000
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost"}


class _ApiError(Exception):
    def __init__(self, status: int, code: str, **extra: object) -> None:
        super().__init__(code)
        self.status = status
        self.body: dict[str, object] = {"code": code, **extra}


@dataclass
class SimulatorRuntime:
    """What the routes share: the books, the config, and the hooks the hosting server provides."""

    config: SimulatorConfig
    state: SimulatorState
    # Set when the server stops, so held requests (the `timeout` fault) let go at once.
    closing: threading.Event = field(default_factory=threading.Event)
    # Set by SimulatorServer (uvicorn); without it a lost reply is a truncated body instead of no reply.
    drop_connection: ConnectionDropper | None = None
    _http: httpx.AsyncClient | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.callback_timeout_s)
        return self._http

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        self.closing.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def pause(self, seconds: float, request: Request | None = None) -> None:
        """Sleep up to `seconds`; wake early if the server is closing or the client has gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.closing.is_set() and loop.time() < deadline:
            if request is not None and await request.is_disconnected():
                return
            await asyncio.sleep(min(_POLL_S, max(0.0, deadline - loop.time())))

    async def transport_faults(
        self, request: Request, order_no: str | None, sku: str | None
    ) -> Response | None:
        """Faults of the provider's server rather than its books; all happen before anything is committed."""
        latency = self.state.take("latency", order_no, sku)
        if latency is not None:
            ms = latency.latency_ms if latency.latency_ms is not None else _DEFAULT_LATENCY_MS
            await self.pause(ms / 1000)
        if self.state.take("timeout", order_no, sku) is not None:
            await self.pause(self.config.timeout_hold_s, request)
            return _DroppedReply(self.drop_connection)
        if self.state.take("error_5xx_before_commit", order_no, sku) is not None:
            return JSONResponse({"code": "INTERNAL_ERROR"}, status_code=500)
        return None

    async def complete_later(self, order: OrderView) -> None:
        await self.pause(self.config.async_delay_ms / 1000)
        if self.closing.is_set():
            return
        done = self.state.complete(order.merchant_id, order.order_no)
        if done is not None and done.callback_url:
            await self.send_callbacks(done)

    async def send_callbacks(self, order: OrderView) -> None:
        """The signed callback, preceded by a forged one and followed by a copy when those faults fire."""
        assert order.callback_url is not None
        keys = self.state.merchant_keys(order.merchant_id)
        assert keys is not None
        now = self.state.now()
        body = {"code": "OK", **order.reply(), "merchant_id": order.merchant_id, "timestamp": now}
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(now)
        genuine = callback_signature(keys.callback_secret, timestamp, raw)
        if self.state.take("forged_callback", order.order_no, order.sku) is not None:
            forged = callback_signature("forged-" + keys.callback_secret, timestamp, raw)
            await self._post_callback(order.callback_url, timestamp, raw, forged)
        await self._post_callback(order.callback_url, timestamp, raw, genuine)
        if self.state.take("duplicate_callback", order.order_no, order.sku) is not None:
            await self._post_callback(order.callback_url, timestamp, raw, genuine)

    async def _post_callback(self, url: str, timestamp: str, raw: bytes, signature: str) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Sim-Timestamp": timestamp,
            "X-Sim-Signature": signature,
        }
        # One attempt per callback: the receiver learns anything it missed by querying.
        try:
            reply = await self.http.post(url, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("callback to %s failed: %r", url, exc)
        else:
            logger.info("callback to %s: HTTP %d", url, reply.status_code)


class _DroppedReply(Response):
    """No reply at all: the connection is aborted, so the client sees a transport error.

    Under SimulatorServer the server aborts the socket before a byte is written. Hosted elsewhere, the
    fallback promises a body it never finishes and fails, which the ASGI server answers by closing the
    connection: still a transport error to the client, never a clean HTTP reply.
    """

    def __init__(self, drop_connection: ConnectionDropper | None) -> None:
        super().__init__()
        self._drop_connection = drop_connection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self._drop_connection is not None and client is not None:
            # False means the connection is already gone (the client gave up first): nothing left to drop.
            if self._drop_connection((str(client[0]), int(client[1]))):
                # Let the server see the connection is lost before the app returns, so it writes no 500.
                for _ in range(3):
                    await asyncio.sleep(0)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ConnectionAbortedError("simulated lost reply")


@dataclass(frozen=True)
class SignedCall:
    """A request whose merchant, timestamp and signature have been checked."""

    merchant: MerchantKeys
    body: Mapping[str, object]

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self.body.get(name)
        if value is None or value == "":
            if required:
                raise _ApiError(400, "BAD_REQUEST", field=name, message=f"{name} is required")
            return None
        if not isinstance(value, str) or len(value) > 256:
            raise _ApiError(400, "BAD_REQUEST", field=name, message=f"{name} must be a string of 1-256 chars")
        return value

    def required(self, name: str) -> str:
        value = self.text(name)
        assert value is not None
        return value


async def _runtime(request: Request) -> SimulatorRuntime:  # async: no worker-thread hop per request
    runtime: SimulatorRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[SimulatorRuntime, Depends(_runtime)]


def _unix_seconds(value: object) -> int | None:
    """An integer, or a string of ASCII digits: int() alone also reads ' 12', '1_2' and '１２'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _UNIX_SECONDS.fullmatch(value):
        return int(value)
    return None


async def _signed_call(request: Request, runtime: RuntimeDep) -> SignedCall:
    try:
        body = loads_bounded(await request.body())
    except ValueError as exc:
        raise _ApiError(400, "BAD_REQUEST", message=f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _ApiError(400, "BAD_REQUEST", message="body must be a JSON object")
    for key, value in body.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise _ApiError(
                400, "BAD_REQUEST", field=key, message="top-level values must be str, int or null"
            )

    merchant_id = body.get("merchant_id")
    keys = runtime.state.merchant_keys(merchant_id) if isinstance(merchant_id, str) else None
    if keys is None:
        raise _ApiError(401, "BAD_SIGNATURE", message="unknown merchant_id")
    timestamp = _unix_seconds(body.get("timestamp"))
    if timestamp is None:
        raise _ApiError(401, "BAD_SIGNATURE", message="timestamp must be unix seconds")
    skew = abs(runtime.state.now() - timestamp)
    if skew > runtime.config.timestamp_tolerance_s:
        raise _ApiError(401, "BAD_SIGNATURE", message=f"timestamp is {skew} s from the server clock")
    if not verify(body, keys.secret, keys.scheme):
        # A sandbox courtesy real providers also offer: the string we signed, never the key.
        raise _ApiError(401, "BAD_SIGNATURE", message="sign mismatch", sign_string=sign_string(body))
    return SignedCall(merchant=keys, body=body)


SignedDep = Annotated[SignedCall, Depends(_signed_call)]


def _loopback_only(request: Request) -> None:
    host = request.client.host if request.client else ""
    if host not in _LOOPBACK and not host.startswith("127."):
        raise _ApiError(403, "FORBIDDEN", message="test endpoints answer loopback clients only")


LoopbackDep = Depends(_loopback_only)


class FaultCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: FaultMode
    count: int | None = Field(default=None, ge=1)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    order_no: str | None = None
    sku: str | None = None
    latency_ms: int | None = Field(default=None, ge=0)


class ReverseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_no: str
    merchant_id: str | None = None


def _order_reply(order: OrderView, *, code: str = "OK") -> JSONResponse:
    return JSONResponse({"code": code, **order.reply()})


api = APIRouter(prefix="/api/v1")
sim = APIRouter(prefix="/_sim", dependencies=[LoopbackDep])


@api.post("/validate")
async def validate(call: SignedDep, runtime: RuntimeDep, request: Request) -> Response:
    sku, account = call.required("sku"), call.required("account")
    if (faulted := await runtime.transport_faults(request, None, sku)) is not None:
        return faulted
    refusal = runtime.state.validate(sku, account)
    if refusal is not None:
        return JSONResponse({"code": refusal, "account": account, "sku": sku})
    return JSONResponse({"code": "OK", "account": account, "sku": sku, "nickname": f"player_{account[-4:]}"})


@api.post("/topup")
async def topup(call: SignedDep, runtime: RuntimeDep, request: Request) -> Response:
    order_no, sku, account = call.required("order_no"), call.required("sku"), call.required("account")
    callback_url = call.text("callback_url", required=False)
    if (faulted := await runtime.transport_faults(request, order_no, sku)) is not None:
        return faulted
    outcome = runtime.state.topup(call.merchant.id, order_no, sku, account, callback_url)
    if outcome.conflict:
        raise _ApiError(409, "IDEMPOTENCY_CONFLICT", order_no=order_no)
    order = outcome.order
    assert order is not None
    if outcome.created and order.status == "PROCESSING":
        runtime.spawn(runtime.complete_later(order))
    # After the commit (or the replay of an earlier one): the work is done, only the reply is lost.
    if runtime.state.take("lost_after_commit", order_no, sku) is not None:
        return _DroppedReply(runtime.drop_connection)
    return _order_reply(order, code=order.reason if order.status == "FAILED" and order.reason else "OK")


@api.post("/query")
async def query(call: SignedDep, runtime: RuntimeDep, request: Request) -> Response:
    order_no = call.text("order_no", required=False)
    provider_ref = call.text("provider_ref", required=False)
    if order_no is None and provider_ref is None:
        raise _ApiError(400, "BAD_REQUEST", field="order_no", message="order_no or provider_ref is required")
    order = runtime.state.find(call.merchant.id, order_no=order_no, provider_ref=provider_ref)
    sku = order.sku if order else None
    if (
        faulted := await runtime.transport_faults(request, order.order_no if order else order_no, sku)
    ) is not None:
        return faulted
    # Read again: the latency fault may have let an async order complete meanwhile.
    order = runtime.state.find(call.merchant.id, order_no=order_no, provider_ref=provider_ref)
    if order is None:
        return JSONResponse({"code": "NOT_FOUND"})
    in_flight = order.status == "PROCESSING"
    if in_flight and runtime.state.take("not_found_in_flight", order.order_no, sku) is not None:
        return JSONResponse({"code": "NOT_FOUND"})
    return _order_reply(order)


@api.post("/balance")
async def balance(call: SignedDep, runtime: RuntimeDep, request: Request) -> Response:
    if (faulted := await runtime.transport_faults(request, None, None)) is not None:
        return faulted
    return JSONResponse({"code": "OK", "balance": runtime.state.balance(call.merchant.id)})


@sim.get("/ledger")
async def ledger(runtime: RuntimeDep) -> dict[str, Any]:
    credits, reversals = runtime.state.ledger()
    return {
        "credits": [vars(c) for c in credits],
        "reversals": [vars(r) for r in reversals],
    }


@sim.get("/accounts/{account}")
async def account_points(account: str, runtime: RuntimeDep) -> dict[str, Any]:
    points = runtime.state.account_points(account)
    if points is None:
        raise _ApiError(404, "NOT_FOUND", account=account)
    return {"code": "OK", "account": account, "points": points}


@sim.get("/faults")
async def list_faults(runtime: RuntimeDep) -> dict[str, Any]:
    return {"code": "OK", "faults": runtime.state.faults()}


@sim.post("/faults")
async def arm_fault(fault: FaultCreate, runtime: RuntimeDep) -> dict[str, Any]:
    armed = runtime.state.arm(**fault.model_dump())
    return {"code": "OK", "fault": vars(armed)}


@sim.delete("/faults")
async def clear_faults(runtime: RuntimeDep) -> dict[str, Any]:
    runtime.state.clear_faults()
    return {"code": "OK"}


@sim.post("/reset")
async def reset(runtime: RuntimeDep) -> dict[str, Any]:
    runtime.state.reset()
    return {"code": "OK"}


@sim.post("/reverse")
async def reverse(body: ReverseCreate, runtime: RuntimeDep) -> Response:
    merchants = [body.merchant_id] if body.merchant_id else runtime.state.merchants_with_order(body.order_no)
    if len(merchants) > 1:
        raise _ApiError(
            409, "AMBIGUOUS_ORDER", message="order_no exists for several merchants; give merchant_id"
        )
    merchant_id = merchants[0] if merchants else ""
    if runtime.state.find(merchant_id, order_no=body.order_no) is None:
        raise _ApiError(404, "NOT_FOUND", order_no=body.order_no)
    order = runtime.state.reverse(merchant_id, body.order_no)
    if order is None:
        raise _ApiError(409, "NOT_REVERSIBLE", message="only a SUCCESS order can be reversed")
    if order.callback_url:
        runtime.spawn(runtime.send_callbacks(order))
    return _order_reply(order)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _ApiError)
    return JSONResponse(exc.body, status_code=exc.status)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return JSONResponse({"code": "BAD_REQUEST", "errors": errors}, status_code=400)


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """A fresh simulated provider with its own in-memory books."""
    config = config or default_config()
    runtime = SimulatorRuntime(config=config, state=SimulatorState(config))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.closing.clear()
        try:
            yield
        finally:
            await runtime.shutdown()

    app = FastAPI(title="Cardless simulated provider", version="1", lifespan=lifespan)
    app.state.runtime = runtime
    # Before any route reads the body: see cardless.protocol.jsonlimits.
    app.add_middleware(BoundedJsonMiddleware)
    app.include_router(api)
    app.include_router(sim)
    app.add_exception_handler(_ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app

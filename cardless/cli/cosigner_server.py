"""``cardless cosigner``: the co-signer service (``oracles.cosigner``) served over HTTP by Starlette/uvicorn.

The checks, the journal and the key live in :mod:`oracles.cosigner`; this module only serves them (the
``oracles`` package imports no web framework). Two routes, both authenticated (``oracles.cosigner_wire``):

- ``POST /v1/sign/fulfilments`` ``{"fulfilments": [{order_id, receipt_hash, fulfilled_at, paid_tx,
  provider}, ...]}`` -> ``{"signer", "signature"}`` over a ``Fulfilment`` (one) or ``FulfilmentBatch``;
- ``POST /v1/sign/refund`` ``{order_id, reason_code, paid_tx}`` -> ``{"signer", "signature"}``;

``GET /healthz`` (``{"status": "ok", "signer": address}``, unauthenticated: the address is public on
chain) and ``GET /metrics`` (Prometheus: ``cardless_cosigner_requests_total{route, outcome}``, counts
only). Answers: 401 ``unauthorised`` (the reason is logged, not returned), 413 body too large, 400 bad
request (the field at fault), 422 ``refused`` with ``[{order_id, reason}]``, 500 ``internal error`` with
nothing else. The body is capped at 128 KiB and 4 levels of JSON before any handler reads it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import HTTPProvider, Web3

from cardless.cli.adapters import build_adapters
from cardless.cli.keys import cosigner_key, cosigner_secret
from cardless.cli.settings import Settings
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.deployment import load_deployment
from cardless.protocol.jsonlimits import BoundedJsonMiddleware, JsonLimitError, loads_bounded
from oracles.cosigner import CoSignerJournal, CoSignerService
from oracles.cosigner_wire import (
    FULFILMENTS_PATH,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    REFUND_PATH,
    CoSignerAuthError,
    CoSignerRefusedError,
    CoSignerRequestError,
    RequestAuth,
    parse_fulfilments,
    parse_refund,
)

__all__ = ["CoSignerServer", "ServiceFactory", "create_cosigner_app", "server_from_settings"]

log = logging.getLogger("cardless.cosigner")

ServiceFactory = Callable[[list[httpx.AsyncClient]], CoSignerService]
"""Builds the service (its adapters' clients on the server's own loop, registered for closing)."""


def create_cosigner_app(build_service: ServiceFactory, auth: RequestAuth) -> BoundedJsonMiddleware:
    holder: dict[str, CoSignerService] = {}
    registry = CollectorRegistry()
    requests_total = Counter(
        "cardless_cosigner_requests",
        "Signing requests by route and outcome (signed, refused, unauthorised, bad_request, error)",
        ["route", "outcome"],
        registry=registry,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        clients: list[httpx.AsyncClient] = []
        holder["service"] = build_service(clients)
        try:
            yield
        finally:
            for client in clients:
                await client.aclose()

    async def authenticated(request: Request) -> bytes | Response:
        body = await request.body()
        try:
            auth.verify(request.method, request.url.path, request.headers, body)
        except CoSignerAuthError as exc:
            client = request.client.host if request.client else "?"
            log.warning("refused an unauthenticated request from %s: %s", client, exc)
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        return body

    async def answer(request: Request, route: str, sign: Callable[[Any], Awaitable[Any]]) -> Response:
        reply = await _answer(request, sign)
        outcome = {200: "signed", 422: "refused", 401: "unauthorised", 400: "bad_request"}
        requests_total.labels(route, outcome.get(reply.status_code, "error")).inc()
        return reply

    async def _answer(request: Request, sign: Callable[[Any], Awaitable[Any]]) -> Response:
        body = await authenticated(request)
        if isinstance(body, Response):
            return body
        try:
            document = loads_bounded(body, max_depth=MAX_JSON_DEPTH)
        except (JsonLimitError, ValueError):
            return JSONResponse({"error": "bad request", "detail": "not JSON within the limits"}, 400)
        try:
            signed = await sign(document)
        except CoSignerRequestError as exc:
            return JSONResponse({"error": "bad request", "detail": str(exc)}, status_code=400)
        except CoSignerRefusedError as exc:
            log.warning("refused: %s", exc)
            refused = [r.as_dict() for r in exc.refusals]
            return JSONResponse({"error": "refused", "refused": refused}, status_code=422)
        except Exception:
            log.exception("co-signing failed")
            return JSONResponse({"error": "internal error"}, status_code=500)
        return JSONResponse({"signer": signed.signer, "signature": Web3.to_hex(signed.signature)})

    async def fulfilments(request: Request) -> Response:
        sign = holder["service"].sign_fulfilments
        return await answer(request, "fulfilments", lambda d: sign(parse_fulfilments(d)))

    async def refund(request: Request) -> Response:
        return await answer(request, "refund", lambda d: holder["service"].sign_refund(parse_refund(d)))

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "signer": holder["service"].key.address})

    app = Starlette(
        routes=[
            Route(FULFILMENTS_PATH, fulfilments, methods=["POST"]),
            Route(REFUND_PATH, refund, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return BoundedJsonMiddleware(app, max_body_bytes=MAX_BODY_BYTES, max_depth=MAX_JSON_DEPTH)


class CoSignerServer:
    """The co-signer app under uvicorn in a thread of its own (``start`` returns the URL once listening);
    ``cardless cosigner`` runs one in its own process."""

    def __init__(
        self, build_service: ServiceFactory, auth: RequestAuth, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        config = uvicorn.Config(
            create_cosigner_app(build_service, auth),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.url = ""
        self.signer = ""

    def start(self, timeout: float = 15) -> str:
        server = self._server
        thread = threading.Thread(target=server.run, name="cosigner", daemon=True)
        thread.start()
        self._thread = thread
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the co-signer did not start on {self.host}")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> CoSignerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_from_settings(settings: Settings) -> CoSignerServer:
    """The co-signer of ``settings``: its own keystore, journal, chain connection, deployment file and
    provider files (their secrets from the environment, as ``cardless oracle`` reads them)."""
    w3 = Web3(HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 10}))
    deployment = load_deployment(settings.effective_deployment_file, w3)
    profile = settings.chain_profile(deployment.chain_id)
    key = cosigner_key(settings)
    auth = RequestAuth(cosigner_secret(settings))
    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact("CardlessEscrow").abi)
    if not escrow.functions.isOracleSigner(key.address).call():
        log.warning(
            "the co-signer key %s is not an authorised oracle signer of %s (yet): its signatures will be "
            "ignored until the owner adds it (docs/operations/cosigner.md)",
            key.address,
            deployment.escrow,
        )
    journal = CoSignerJournal(settings.effective_cosigner_journal)

    def build(clients: list[httpx.AsyncClient]) -> CoSignerService:
        adapters = build_adapters(settings, clients, base_url=settings.provider_base_url, secret_values={})
        return CoSignerService(
            key=key,
            domain=deployment.domain,
            escrow=escrow,
            adapters=adapters,
            journal=journal,
            confirmations=profile.confirmations,
        )

    server = CoSignerServer(build, auth, host=settings.cosigner_host, port=settings.cosigner_port)
    server.signer = key.address
    return server

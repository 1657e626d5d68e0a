"""Operations routes, outside ``/v1`` where probes and scrapers expect them: ``/healthz`` (the process
answers), ``/readyz`` (the database, the chain, the providers and the oracle's lag; 503 when one fails)
and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import ContextDep, SessionDep
from gateway.api.errors import problem_responses
from gateway.api.routes import operation_id
from gateway.operations_schemas import CheckOut, LiveOut, ReadyOut
from gateway.services import ServiceUnavailable
from gateway.services.operations import Metrics, readiness

__all__ = ["router"]

router = APIRouter(
    tags=["operations"], generate_unique_id_function=operation_id, responses=problem_responses(405, 500)
)


class NotReady(ServiceUnavailable):
    def __init__(self, failing: dict[str, str]) -> None:
        super().__init__("not ready: " + "; ".join(f"{k} {v}" for k, v in failing.items()), retry_after=5)


@router.get("/healthz")
async def get_liveness() -> LiveOut:  # async: nothing to wait for, so no hop to a worker thread
    """The process answers (no dependency is checked: a restart would not fix them)."""
    return LiveOut(status="ok")


@router.get("/readyz", responses=problem_responses(503))
def get_readiness(context: ContextDep, session: SessionDep) -> ReadyOut:
    """Whether this gateway can take orders that will be fulfilled: the database and the chain answer,
    at least one provider's circuit is closed, and the oracle is at most 50 blocks behind the head.
    Not ready is a 503 problem whose ``errors`` name each failing check."""
    result = readiness(session, context.w3, context.adapters, confirmations=context.confirmations)
    if not result.ready:
        raise NotReady({name: c.detail for name, c in result.checks.items() if not c.ok})
    return ReadyOut(
        status="ready",
        checks={name: CheckOut(ok=c.ok, detail=c.detail) for name, c in result.checks.items()},
    )


# Not in the OpenAPI document: Prometheus's text format for scrapers, not part of the JSON API.
@router.get("/metrics", response_class=Response, include_in_schema=False)
def get_metrics(request: Request) -> Response:
    """Prometheus metrics: orders by state, webhook backlog, oracle lag in blocks, providers' failures
    and circuits, quote rate-limit hits."""
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

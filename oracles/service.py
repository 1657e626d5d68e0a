"""One entry point to run an oracle: the worker's pipeline in a tight loop (latency) and its periodic
jobs on APScheduler, in the same event loop, each job one instance at a time."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from oracles.worker import OracleWorker

__all__ = ["JobIntervals", "OracleService"]


@dataclasses.dataclass(frozen=True)
class JobIntervals:
    """Seconds between runs of each periodic job."""

    requery_unknown: float = 1
    expire_and_refund: float = 5
    purge_unpaid: float = 300
    sweep: float = 60
    gas_balance: float = 60
    webhooks: float = 1


class OracleService:
    def __init__(
        self,
        worker: OracleWorker,
        *,
        sweep: Callable[[], Any] | None = None,
        gas_balance: Callable[[], Any] | None = None,
        webhooks: Callable[[], Any] | None = None,
        intervals: JobIntervals | None = None,
    ) -> None:
        self.worker = worker
        self.sweep = sweep
        self.gas_balance = gas_balance
        self.webhooks = webhooks
        self.intervals = intervals or JobIntervals()

    def scheduler(self) -> AsyncIOScheduler:
        """The periodic jobs, not started: requery-unknown, expire-and-refund, purge-unpaid and (given
        them) sweep, gas-balance and deliver-webhooks. A plain function such as the sweep runs in
        APScheduler's thread pool, off the event loop; a coroutine function (deliver-webhooks) runs on
        this loop."""
        scheduler = AsyncIOScheduler()
        jobs: dict[str, tuple[Callable[[], Any], float]] = {
            "requery-unknown": (self.worker.requery_due, self.intervals.requery_unknown),
            "expire-and-refund": (self.worker.expire_and_refund, self.intervals.expire_and_refund),
            "purge-unpaid": (self.worker.purge_unpaid, self.intervals.purge_unpaid),
            "purge-request-signals": (self.worker.purge_signals, self.intervals.purge_unpaid),
        }
        if self.sweep is not None:
            jobs["sweep"] = (self.sweep, self.intervals.sweep)
        if self.gas_balance is not None:  # a metric, and an alarm under the chain's threshold
            jobs["gas-balance"] = (self.gas_balance, self.intervals.gas_balance)
        if self.webhooks is not None:
            jobs["deliver-webhooks"] = (self.webhooks, self.intervals.webhooks)
        for job_id, (job, seconds) in jobs.items():
            scheduler.add_job(job, "interval", seconds=seconds, id=job_id, max_instances=1, coalesce=True)
        return scheduler

    async def run(self, stop: asyncio.Event, *, started: Callable[[], None] | None = None) -> None:
        """Run until ``stop`` is set, then wait for provider calls in flight. ``started`` is called once
        the jobs are scheduled."""
        scheduler = self.scheduler()
        scheduler.start()
        if started is not None:
            started()
        try:
            await self.worker.run(stop, housekeeping=False)
        finally:
            scheduler.shutdown(wait=False)

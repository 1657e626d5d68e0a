"""Per-provider health: a small circuit breaker.

Each adapter owns one breaker, so one provider's outage never blocks another's orders. States:

- closed: calls go through; ``failure_threshold`` consecutive failures open the circuit.
- open: calls are refused without touching the provider (submit raises ``ProviderUnavailable``,
  which is safe to reroute because nothing was sent) until ``open_seconds`` have passed.
- half-open: exactly one probe call is let through; success closes the circuit, failure opens it
  again for another ``open_seconds``.

A *failure* is a sign the provider is unhealthy: timeout, connection error, 5xx, unparseable
reply. A refusal or a 4xx is a healthy provider saying no, and counts as success.

Single event loop, no locks: the breaker is only touched between awaits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker", "HealthSnapshot"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclasses.dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the gateway's health endpoint reports for one provider."""

    state: BreakerState
    consecutive_failures: int
    opened_at: float | None
    """Monotonic clock reading when the circuit last opened; None while closed."""


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe.

    Usage: ``if not breaker.acquire(): refuse``; then exactly one of ``success()``, ``failure()``
    or ``release()`` (the call ended without telling us anything about health, e.g. it was
    cancelled). Forgetting to settle a half-open probe would keep the circuit shut forever, so
    callers settle in a ``finally``.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if open_seconds <= 0:
            raise ValueError("open_seconds must be positive")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probe_in_flight or self._clock() - self._opened_at >= self.open_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(self.state, self._failures, self._opened_at)

    def acquire(self) -> bool:
        """May a call go out now? In half-open, True for the one probe and False for the rest."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        if self._probe_in_flight or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._probe_in_flight = False

    def release(self) -> None:
        """The call ended without a verdict on health; free the probe slot if it held it."""
        self._probe_in_flight = False

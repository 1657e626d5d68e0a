"""Rate limits on quotes, per client address and per buyer wallet.

Every quote is a stored row and a validation call to a provider, so one client (or one wallet spread
over many clients) must not be able to make them as fast as it can send requests. The counting is the
``limits`` library's moving window, kept in this process's memory: one gateway process is one set of
counters (several processes behind a balancer would each allow the full rate; a shared ``limits``
storage such as Redis is the change to make then).

Both limits are checked before either is counted, so a refused request does not use up the other
allowance. The outcome is plain data (:class:`Allowance`); :mod:`gateway.api.ratelimits` turns it into
``RateLimit`` headers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from gateway.services._exceptions import RateLimited

__all__ = ["Allowance", "QuoteLimits"]


@dataclasses.dataclass(frozen=True)
class Allowance:
    """What is left of one limit after a request: ``remaining`` of ``limit`` requests per ``window``
    seconds, the window freeing a request in ``reset`` seconds."""

    policy: str
    limit: int
    window: int
    remaining: int
    reset: int


class QuoteLimits:
    """The quote limits: ``per_client`` and ``per_buyer`` in the ``limits`` notation (``60/minute``)."""

    def __init__(self, *, per_client: str, per_buyer: str, clock: Callable[[], float] = time.time) -> None:
        self._items: dict[str, RateLimitItem] = {"client": parse(per_client), "buyer": parse(per_buyer)}
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._clock = clock
        self.on_refused: Callable[[list[str]], None] | None = None
        """Told the exhausted limits' names on every refusal (the metrics count them)."""

    def hit(self, *, client: str, buyer: str) -> list[Allowance]:
        """Count one quote for ``client`` (an IP address) and ``buyer`` (a wallet address, any case).
        Raises :class:`RateLimited` naming the exhausted limit(s), counting nothing, when one is spent."""
        keys = {"client": client, "buyer": buyer.lower()}
        spent = [
            policy
            for policy, item in self._items.items()
            if not self._limiter.test(item, "quotes", policy, keys[policy])
        ]
        if spent:
            if self.on_refused is not None:
                self.on_refused(spent)
            allowances = self._allowances(keys)
            retry_after = max(a.reset for a in allowances if a.policy in spent)
            raise RateLimited(
                f"too many quotes per {' and per '.join(spent)}; retry after {retry_after} s",
                retry_after=max(retry_after, 1),
                allowances=allowances,
            )
        for policy, item in self._items.items():
            self._limiter.hit(item, "quotes", policy, keys[policy])
        return self._allowances(keys)

    def hit_client(self, client: str) -> list[Allowance]:
        """Count one account check for ``client`` against the per-client limit only: a check calls a
        provider as a quote does, but names no wallet yet. Raises :class:`RateLimited` when spent."""
        item = self._items["client"]
        if not self._limiter.test(item, "quotes", "client", client):
            if self.on_refused is not None:
                self.on_refused(["client"])
            allowances = [
                a for a in self._allowances({"client": client, "buyer": ""}) if a.policy == "client"
            ]
            raise RateLimited(
                f"too many requests per client; retry after {allowances[0].reset} s",
                retry_after=max(allowances[0].reset, 1),
                allowances=allowances,
            )
        self._limiter.hit(item, "quotes", "client", client)
        return [a for a in self._allowances({"client": client, "buyer": ""}) if a.policy == "client"]

    def _allowances(self, keys: dict[str, str]) -> list[Allowance]:
        now = self._clock()
        result = []
        for policy, item in self._items.items():
            stats = self._limiter.get_window_stats(item, "quotes", policy, keys[policy])
            result.append(
                Allowance(
                    policy=policy,
                    limit=item.amount,
                    window=item.get_expiry(),
                    remaining=stats.remaining,
                    reset=max(0, math.ceil(stats.reset_time - now)),
                )
            )
        return result

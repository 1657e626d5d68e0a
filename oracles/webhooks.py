"""Webhook delivery: sends the outbox's pending deliveries (``cardless.ledger.outbox``), at least once.

A periodic job of the oracle service (``OracleService``, every second). Each run:

1. claims due deliveries with a work lease (the conditional update the orders use), committed before
   anything is sent, so two workers never send one delivery at once and a dead worker's claim expires;
2. resolves the endpoint's host and, outside development, refuses it unless *every* address is public
   (``protocol.webhooks.address_refusal``), then connects to the address it checked (the URL's host
   stays in ``Host`` and in TLS SNI), so a DNS answer that changes between the check and the connection
   cannot point the request inward; redirects are not followed;
3. POSTs the event's stored body with a ``t=…,v1=…`` signature per live secret, under a connect/read
   timeout and an overall deadline, reading at most ``max_response_bytes`` of the answer;
4. records the attempt (the delivery log) and the outcome in one transaction: 2xx is delivered;
   anything else is retried with exponential back-off (``retry_base`` doubling to ``retry_cap``) until
   ``retry_window`` after the first attempt; an endpoint with no success for ``disable_after`` since
   its first failure is disabled, the reason recorded for the merchant. Its deliveries wait, pending,
   until it is enabled again (or a manual redeliver sends one anyway).

A crash between the commit of the state change and the POST leaves the delivery pending: it is sent
by the next run (``webhook.before_send``). A crash after the POST and before the record sends it again:
the receiver sees the same event id twice and drops the second (``webhook.after_send``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import certifi
import httpx
from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger.cipher import AccountCipher, CipherError
from cardless.ledger.logcontext import ORDER_ID
from cardless.ledger.models import utcnow
from cardless.ledger.outbox import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    aware,
    secret_context,
)
from cardless.protocol import webhooks as signing
from oracles.failpoints import failpoint

__all__ = ["DeliveryPolicy", "Resolver", "WebhookSender", "endpoint_secrets", "system_resolver"]

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the IP addresses it resolves to."""

_EXCERPT = 1024
_USER_AGENT = "Cardless-Webhooks/1.0"


@dataclasses.dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 10.0
    """Seconds for connecting and for each read; the whole attempt also stops after twice this."""
    max_response_bytes: int = 64 * 1024
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    retry_window: timedelta = timedelta(hours=72)
    """A delivery is retried for this long after its first attempt (at least a day: the issue asks 24 h)."""
    disable_after: timedelta = timedelta(hours=24)
    allow_private: bool = False
    """Development only: let endpoints on loopback and private networks receive deliveries."""
    batch: int = 50
    concurrency: int = 8
    lease_ttl: timedelta = timedelta(seconds=60)

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt: base, 2×base, 4×base, … capped."""
        delay: timedelta = self.retry_base * (2 ** min(max(attempts - 1, 0), 30))
        return min(delay, self.retry_cap)


def endpoint_secrets(endpoint: WebhookEndpoint, cipher: AccountCipher, now: datetime) -> list[str]:
    """The endpoint's live signing secrets, newest first: the current one, and the previous one while
    its rotation overlap lasts."""
    context = secret_context(endpoint.id)
    live = [cipher.decrypt(endpoint.secret_ciphertext, context)]
    expires = aware(endpoint.previous_secret_expires_at)
    if endpoint.previous_secret_ciphertext is not None and expires is not None and expires > now:
        live.append(cipher.decrypt(endpoint.previous_secret_ciphertext, context))
    return live


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclasses.dataclass
class _Job:
    delivery_id: int
    event_id: str
    event_type: str
    order_id: str | None
    body: bytes
    url: str
    secrets: list[str]
    number: int
    manual: bool


@dataclasses.dataclass
class _Outcome:
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: AccountCipher,
        policy: DeliveryPolicy | None = None,
        *,
        owner: str,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.cipher = cipher
        self.policy = policy or DeliveryPolicy()
        self.owner = owner
        self.resolver = resolver
        self.clock = clock
        # Built once: loading the CA bundle costs ~0.1 s, and the job runs every second.
        self._tls = ssl.create_default_context(cafile=certifi.where())

    async def deliver_due(self) -> int:
        """Send every due delivery this run can claim; returns how many were attempted."""
        jobs = self._claim()
        if not jobs:
            return 0
        semaphore = asyncio.Semaphore(self.policy.concurrency)
        # trust_env=False: no proxy or netrc from the environment; the pinned address is what we connect to.
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.policy.timeout),
            follow_redirects=False,
            trust_env=False,
            verify=self._tls,
        ) as client:

            async def one(job: _Job) -> None:
                ORDER_ID.set(job.order_id)  # this task's own context
                async with semaphore:
                    outcome = await self._send(client, job)
                    failpoint("webhook.after_send")
                    self._record(job, outcome)

            await asyncio.gather(*(one(job) for job in jobs))
        return len(jobs)

    # ------------------------------------------------------------------------------------ claim

    def _claim(self) -> list[_Job]:
        now = self.clock()
        free = or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)
        jobs: list[_Job] = []
        with self.sessions.begin() as session:
            rows = session.execute(
                select(WebhookDelivery, WebhookEndpoint)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.status == DeliveryStatus.PENDING.value,
                    WebhookDelivery.next_attempt_at <= now,
                    or_(WebhookEndpoint.enabled.is_(True), WebhookDelivery.manual_requested_at.is_not(None)),
                    free,
                )
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(self.policy.batch)
            ).all()
            for delivery, endpoint in rows:
                claimed = session.execute(
                    update(WebhookDelivery)
                    .where(
                        and_(
                            WebhookDelivery.id == delivery.id,
                            WebhookDelivery.status == DeliveryStatus.PENDING.value,
                            free,
                        )
                    )
                    .values(lease_owner=self.owner, lease_until=now + self.policy.lease_ttl)
                    .execution_options(synchronize_session=False)
                )
                assert isinstance(claimed, CursorResult)
                if claimed.rowcount != 1:
                    continue
                try:
                    live = endpoint_secrets(endpoint, self.cipher, now)
                except CipherError:
                    log.error("webhook endpoint %s: its secret does not decrypt with this key", endpoint.id)
                    continue
                jobs.append(
                    _Job(
                        delivery_id=delivery.id,
                        event_id=delivery.event.id,
                        event_type=delivery.event.type,
                        order_id=delivery.event.order_id,
                        body=delivery.event.body.encode(),
                        url=endpoint.url,
                        secrets=live,
                        number=delivery.attempts + 1,
                        manual=delivery.manual_requested_at is not None,
                    )
                )
        return jobs

    # ------------------------------------------------------------------------------------- send

    async def _send(self, client: httpx.AsyncClient, job: _Job) -> _Outcome:
        failpoint("webhook.before_send")
        started = time.monotonic()
        outcome = _Outcome()
        try:
            await asyncio.wait_for(self._post(client, job, outcome), timeout=2 * self.policy.timeout)
        except TimeoutError:
            outcome.error = f"no complete answer within {2 * self.policy.timeout:g} s"
        except _Refused as exc:
            outcome.error = str(exc)
        except httpx.HTTPError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # every attempt is recorded, whatever went wrong
            log.exception("webhook delivery %d: unexpected error", job.delivery_id)
            outcome.error = f"internal error ({type(exc).__name__})"
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        return outcome

    async def _post(self, client: httpx.AsyncClient, job: _Job, outcome: _Outcome) -> None:
        url = httpx.URL(job.url)
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise _Refused(f"{host} does not resolve: {exc}") from exc
        if not addresses:
            raise _Refused(f"{host} does not resolve")
        if not self.policy.allow_private:
            for address in addresses:
                refusal = signing.address_refusal(address)
                if refusal is not None:
                    raise _Refused(f"{host} resolves to {refusal}: refused outside development")
        timestamp = int(self.clock().timestamp())
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            signing.EVENT_HEADER: job.event_id,
            signing.TYPE_HEADER: job.event_type,
            signing.SIGNATURE_HEADER: signing.signature_header(job.secrets, timestamp, job.body),
            "Cardless-Delivery-Attempt": str(job.number),
        }
        pinned = url.copy_with(host=addresses[0])
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        async with client.stream(
            "POST", pinned, content=job.body, headers=headers, extensions=extensions
        ) as response:
            outcome.status_code = response.status_code
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= self.policy.max_response_bytes:
                    break  # the rest is not read: a receiver cannot make us download a large body
        outcome.excerpt = bytes(received[:_EXCERPT]).decode("utf-8", "replace") or None
        if not outcome.ok:
            outcome.error = f"HTTP {response.status_code}"

    # ----------------------------------------------------------------------------------- record

    def _record(self, job: _Job, outcome: _Outcome) -> None:
        now = self.clock()
        policy = self.policy
        with self.sessions.begin() as session:
            delivery = session.get(WebhookDelivery, job.delivery_id)
            if delivery is None:  # the endpoint was deleted meanwhile
                return
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
            assert endpoint is not None
            session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    number=job.number,
                    trigger="manual" if job.manual else "scheduled",
                    at=now,
                    url=job.url,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                    response_excerpt=outcome.excerpt,
                )
            )
            delivery.attempts = job.number
            first = aware(delivery.first_attempt_at) or now
            delivery.first_attempt_at = first
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error
            delivery.manual_requested_at = None
            delivery.lease_owner = None
            delivery.lease_until = None
            if outcome.ok:
                delivery.status = DeliveryStatus.DELIVERED.value
                delivery.delivered_at = now
                delivery.next_attempt_at = None
                endpoint.failing_since = None
                log.info("webhook %s %s delivered to %s", job.event_type, job.event_id, endpoint.id)
                return
            if now - first >= policy.retry_window:
                delivery.status = DeliveryStatus.FAILED.value
                delivery.next_attempt_at = None
            else:
                delivery.next_attempt_at = now + policy.retry_delay(job.number)
            failing_since = aware(endpoint.failing_since) or now
            endpoint.failing_since = failing_since
            if endpoint.enabled and now - failing_since >= policy.disable_after:
                endpoint.enabled = False
                endpoint.disabled_at = now
                endpoint.disabled_reason = (
                    f"every delivery failed for {_span(now - failing_since)} (since "
                    f"{failing_since.isoformat(timespec='seconds')}); last attempt: {outcome.error}"
                )
                log.warning("webhook endpoint %s disabled: %s", endpoint.id, endpoint.disabled_reason)
            log.info(
                "webhook %s %s to %s failed (attempt %d): %s",
                job.event_type,
                job.event_id,
                endpoint.id,
                job.number,
                outcome.error,
            )


class _Refused(Exception):  # noqa: N818 - internal: the attempt was not made, and why
    pass


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{delta.total_seconds():.0f} s"

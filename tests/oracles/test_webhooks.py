"""Webhook delivery against a real HTTP receiver on loopback (``http.server`` in a thread).

The receiver verifies every delivery with the Python verifier printed in docs/webhooks.md (executed as
printed), records the event ids it saw, and answers what the test scripts: 500 twice, then 204. The
delivery job (``oracles.webhooks.WebhookSender``) runs against a migrated SQLite ledger; its clock is
the wall clock plus an offset the test moves, so retries fall due without sleeping (the receiver's
5-minute tolerance still holds).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import OrderState, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, utcnow
from cardless.ledger.transitions import transition
from gateway.services.webhooks import WebhookEndpoints
from gateway.webhook_schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from oracles.webhooks import DeliveryPolicy, WebhookSender
from tests.support.orders import add_order

ROOT = Path(__file__).resolve().parents[2]
MERCHANT = "0x" + "33" * 20
CIPHER = AccountCipher(bytes(range(32)))


def documented_snippet(marker: str) -> str:
    """The code block right after ``<!-- marker -->`` in docs/webhooks.md, as printed."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    found = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert found, f"docs/webhooks.md has no {marker} block"
    return found.group(1)


def documented_python_verifier() -> Any:
    namespace: dict[str, Any] = {}
    exec(documented_snippet("verify-python"), namespace)  # the doc's own code, as printed
    return namespace["verify_cardless_signature"]


class Receiver:
    """A merchant's receiver: verifies with the documented verifier, de-duplicates by event id."""

    def __init__(self) -> None:
        self.verify = documented_python_verifier()
        self.secret = ""
        self.now: Any = time.time  # the receiver's clock (a test moving the sender's clock moves it too)
        self.script: list[int] = []  # statuses to answer, in order; 204 once exhausted
        self.received: list[dict[str, Any]] = []
        self.handled: list[str] = []  # event ids acted on (once each)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                verified = receiver.verify(
                    body, self.headers.get("Cardless-Signature", ""), receiver.secret, receiver.now()
                )
                event = json.loads(body)
                duplicate = event["id"] in receiver.handled
                status = receiver.script.pop(0) if receiver.script else 204
                receiver.received.append(
                    {
                        "id": event["id"],
                        "header_id": self.headers.get("Cardless-Event-Id"),
                        "type": event["type"],
                        "verified": verified,
                        "duplicate": duplicate,
                        "answered": status,
                        "body": body,
                        "attempt": self.headers.get("Cardless-Delivery-Attempt"),
                        "signature": self.headers.get("Cardless-Signature", ""),
                    }
                )
                if verified and status < 300 and not duplicate:
                    receiver.handled.append(event["id"])
                self.send_response(status if verified else 400)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cardless"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def register(ledger: sessionmaker[Session], url: str, events: list[str] | None = None) -> tuple[str, str]:
    service = WebhookEndpoints(CIPHER, allow_private=True)
    with ledger() as session:
        created = service.create(
            session,
            MERCHANT,
            WebhookEndpointCreate(url=url, events=events or ["order.paid", "order.settled"]),  # type: ignore[arg-type]
        )
    return created.id, created.secret


def pay_order(ledger: sessionmaker[Session]) -> str:
    """An order moved to paid and committed: the state change that owes the merchant an event."""
    with ledger.begin() as session:
        order = add_order(session, merchant=MERCHANT)
        transition(session, order, OrderState.PAID, "OrderPaid in block 7", paid_tx="0x" + "ab" * 32)
        return order.id


def sender(ledger: sessionmaker[Session], clock: Clock, **policy: Any) -> WebhookSender:
    return WebhookSender(
        ledger,
        CIPHER,
        DeliveryPolicy(allow_private=True, timeout=2, **policy),
        owner="test-worker",
        clock=clock,
    )


def run(job: WebhookSender) -> int:
    return asyncio.run(job.deliver_due())


def test_500_twice_then_delivered_and_a_manual_redelivery_is_recognisable_by_its_event_id(
    ledger: sessionmaker[Session], receiver: Receiver
) -> None:
    endpoint_id, receiver.secret = register(ledger, receiver.url)
    order_id = pay_order(ledger)
    receiver.script = [500, 500]
    clock = Clock()
    job = sender(ledger, clock)

    assert run(job) == 1  # attempt 1: 500
    assert run(job) == 0  # not due again before the back-off
    clock.offset = timedelta(seconds=31)
    assert run(job) == 1  # attempt 2 after 30 s: 500
    clock.offset = timedelta(seconds=31 + 59)
    assert run(job) == 0  # the second wait is 60 s
    clock.offset = timedelta(seconds=31 + 61)
    assert run(job) == 1  # attempt 3: delivered

    assert [r["answered"] for r in receiver.received] == [500, 500, 204]
    assert all(r["verified"] for r in receiver.received)
    ids = {r["id"] for r in receiver.received} | {r["header_id"] for r in receiver.received}
    assert len(ids) == 1 and next(iter(ids)).startswith("evt_")
    assert len({r["body"] for r in receiver.received}) == 1  # the same bytes every time
    assert [r["attempt"] for r in receiver.received] == ["1", "2", "3"]
    event = json.loads(receiver.received[0]["body"])
    assert event["type"] == "order.paid"
    assert event["data"]["order"]["id"] == order_id
    assert event["data"]["order"]["state"] == "paid"
    assert "account" not in json.dumps(event["data"]).replace("account_", "")

    with ledger() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
        assert delivery.status == "delivered"
        assert [(a.number, a.status_code, a.trigger) for a in delivery.log] == [
            (1, 500, "scheduled"),
            (2, 500, "scheduled"),
            (3, 204, "scheduled"),
        ]
        assert delivery.log[0].error == "HTTP 500" and delivery.log[0].response_excerpt == "no"
        assert session.get(WebhookEndpoint, endpoint_id).failing_since is None  # type: ignore[union-attr]

    # The merchant asks for it again: same event id, a fresh signature, and the receiver drops it.
    with ledger() as session:
        again = WebhookEndpoints(CIPHER, allow_private=True).redeliver(
            session, MERCHANT, endpoint_id, delivery.id
        )
    assert again.status == "pending"
    assert run(job) == 1
    last = receiver.received[-1]
    assert last["id"] == receiver.received[0]["id"] and last["verified"] and last["duplicate"]
    assert receiver.handled == [last["id"]]  # acted on once
    with ledger() as session:
        log = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()
        assert [(a.number, a.trigger) for a in log][-1] == (4, "manual")


@pytest.mark.slow
def test_an_endpoint_failing_for_a_day_is_disabled_with_the_reason_and_its_deliveries_wait(
    ledger: sessionmaker[Session], receiver: Receiver
) -> None:
    endpoint_id, receiver.secret = register(ledger, receiver.url)
    pay_order(ledger)
    receiver.script = [503] * 100
    clock = Clock()
    receiver.now = lambda: clock().timestamp()
    job = sender(ledger, clock)
    attempts = 0
    # Walk the clock through the back-off schedule (30 s doubling to an hour) for 25 hours.
    while clock.offset < timedelta(hours=25):
        attempts += run(job)
        with ledger() as session:
            delivery = session.scalars(select(WebhookDelivery)).one()
            endpoint = session.get(WebhookEndpoint, endpoint_id)
            assert endpoint is not None
            if not endpoint.enabled:
                break
            assert delivery.next_attempt_at is not None
            due = delivery.next_attempt_at.replace(tzinfo=None)
            clock.offset = due - utcnow().replace(tzinfo=None) + timedelta(seconds=1)
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None
    assert "every delivery failed for 24 h" in endpoint.disabled_reason
    assert "HTTP 503" in endpoint.disabled_reason
    # 30 s, 1, 2, 4, 8, 16, 32 min, then hourly: ~30 attempts in the first day, and still pending.
    assert 25 <= attempts <= 35
    assert delivery.status == "pending"
    received = len(receiver.received)
    clock.offset += timedelta(hours=2)
    assert run(job) == 0  # a disabled endpoint is not sent to
    assert len(receiver.received) == received

    # Re-enabled by the merchant: the waiting delivery goes out.
    receiver.script = []
    with ledger() as session:
        WebhookEndpoints(CIPHER, allow_private=True).update(
            session, MERCHANT, endpoint_id, WebhookEndpointUpdate(enabled=True)
        )
    assert run(job) == 1
    assert receiver.received[-1]["answered"] == 204
    with ledger() as session:
        assert session.scalars(select(WebhookDelivery)).one().status == "delivered"


def test_a_delivery_is_retried_for_the_whole_window_and_then_marked_failed(
    ledger: sessionmaker[Session], receiver: Receiver
) -> None:
    register(ledger, receiver.url)
    pay_order(ledger)
    receiver.script = [500] * 10
    clock = Clock()
    job = sender(ledger, clock, retry_window=timedelta(minutes=2), disable_after=timedelta(days=30))
    for offset in (0, 31, 92, 300):
        clock.offset = timedelta(seconds=offset)
        run(job)
    with ledger() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
        assert delivery.status == "failed" and delivery.attempts == 4 and delivery.next_attempt_at is None


def test_events_go_only_to_endpoints_subscribed_to_their_type_and_rotation_signs_with_both_secrets(
    ledger: sessionmaker[Session], receiver: Receiver
) -> None:
    endpoint_id, old_secret = register(ledger, receiver.url, events=["order.settled"])
    pay_order(ledger)  # order.paid: not subscribed
    with ledger() as session:
        assert session.scalars(select(WebhookEvent)).one().type == "order.paid"
        assert session.scalars(select(WebhookDelivery)).all() == []
        rotated = WebhookEndpoints(CIPHER, allow_private=True).rotate_secret(
            session, MERCHANT, endpoint_id, timedelta(hours=1)
        )
    with ledger.begin() as session:
        order = add_order(session, merchant=MERCHANT, state=OrderState.PROOF_PENDING)
        transition(session, order, OrderState.SETTLED, "OrderSettled in block 9", settle_tx="0x" + "cd" * 32)
    receiver.secret = old_secret  # a receiver not switched yet still verifies during the overlap
    assert run(sender(ledger, Clock())) == 1
    first = receiver.received[-1]
    assert first["type"] == "order.settled" and first["verified"]
    assert first["signature"].count("v1=") == 2  # one per live secret during the overlap
    with ledger() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
        WebhookEndpoints(CIPHER, allow_private=True).redeliver(session, MERCHANT, endpoint_id, delivery.id)
    receiver.secret = rotated.secret  # and one already switched verifies too
    assert run(sender(ledger, Clock())) == 1
    assert receiver.received[-1]["verified"]


def test_loopback_is_refused_at_delivery_outside_development_and_the_attempt_is_logged(
    ledger: sessionmaker[Session], receiver: Receiver
) -> None:
    # Registered while allowed (development), delivered by a job that is not (production).
    register(ledger, receiver.url)
    pay_order(ledger)
    job = WebhookSender(ledger, CIPHER, DeliveryPolicy(allow_private=False), owner="prod", clock=Clock())
    assert run(job) == 1
    assert receiver.received == []
    with ledger() as session:
        attempt = session.scalars(select(WebhookAttempt)).one()
        assert attempt.status_code is None
        assert attempt.error is not None and "127.0.0.1 is a loopback address" in attempt.error


def test_slow_and_oversized_answers_are_bounded(ledger: sessionmaker[Session]) -> None:
    """An endpoint that drips its answer forever, or sends a huge one, costs one bounded attempt."""

    class Endless(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()
            try:
                while True:  # 200 and then an endless body, a byte at a time for /slow
                    self.wfile.write(b"x" if self.path == "/slow" else b"x" * 65536)
                    if self.path == "/slow":
                        time.sleep(0.05)
            except OSError:
                return

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        register(ledger, base + "/slow")
        register(ledger, base + "/big")
        pay_order(ledger)
        # Per read 0.3 s (the drip's 50 ms gaps never reach it); the whole answer stops at twice that.
        job = WebhookSender(
            ledger, CIPHER, DeliveryPolicy(allow_private=True, timeout=0.3), owner="t", clock=Clock()
        )
        started = time.monotonic()
        assert run(job) == 2
        assert time.monotonic() - started < 3
        with ledger() as session:
            by_url = {a.url.rsplit("/", 1)[1]: a for a in session.scalars(select(WebhookAttempt))}
        assert by_url["slow"].error is not None and "no complete answer within 0.6 s" in by_url["slow"].error
        assert by_url["big"].status_code == 200 and by_url["big"].error is None  # 2xx: delivered
        assert len(by_url["big"].response_excerpt or "") == 1024
    finally:
        server.shutdown()
        server.server_close()


def test_the_event_commits_with_the_state_change_or_not_at_all(ledger: sessionmaker[Session]) -> None:
    register(ledger, "http://127.0.0.1:9/x")
    with ledger() as session:
        order = add_order(session, merchant=MERCHANT)
        order_id = order.id
        session.commit()
        transition(session, order, OrderState.PAID, "OrderPaid in block 7")
        session.flush()
        session.rollback()  # the state change is abandoned: so is its event
    with ledger() as session:
        assert session.scalars(select(WebhookEvent)).all() == []
        moved = session.get(Order, order_id)
        assert moved is not None and moved.state == "quoted"
        assert moved is not None
        transition(session, moved, OrderState.PAID, "OrderPaid in block 7")
        session.commit()
    with ledger() as session:
        event = session.scalars(select(WebhookEvent)).one()
        assert (event.type, event.order_id, event.merchant) == ("order.paid", order_id, MERCHANT)
        assert session.scalars(select(WebhookDelivery)).one().status == "pending"


def test_endpoints_are_read_once_per_transaction_and_a_change_is_seen_at_once(
    ledger: sessionmaker[Session],
) -> None:
    """A stage moving many orders in one transaction reads the merchant's endpoints once; an endpoint
    added in the same session, or by another one before the next transaction, gets its deliveries."""
    first, _ = register(ledger, "http://127.0.0.1:9/a")
    with ledger() as session:
        one = add_order(session, merchant=MERCHANT)
        two = add_order(session, merchant=MERCHANT)
        session.commit()
        transition(session, one, OrderState.PAID, "OrderPaid in block 7")  # reads and keeps [first]
        session.add(
            WebhookEndpoint(
                id="we_" + "0" * 24,
                merchant=MERCHANT,
                url="http://127.0.0.1:9/b",
                event_types=["order.paid"],
                secret_ciphertext=b"x",
            )
        )
        transition(session, two, OrderState.PAID, "OrderPaid in block 7")  # sees its own new endpoint
        session.commit()
        third, _ = register(ledger, "http://127.0.0.1:9/c")  # another session, between transactions
        three = add_order(session, merchant=MERCHANT)
        transition(session, three, OrderState.PAID, "OrderPaid in block 8")
        session.commit()
        deliveries = session.execute(
            select(WebhookEvent.order_id, WebhookDelivery.endpoint_id).join(
                WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id
            )
        ).all()
    got: dict[str, set[str]] = {}
    for order_id, endpoint_id in deliveries:
        got.setdefault(order_id, set()).add(endpoint_id)
    assert got[one.id] == {first}
    assert got[two.id] == {first, "we_" + "0" * 24}
    assert got[three.id] == {first, "we_" + "0" * 24, third}


def _endpoints_of(session: Session, order_id: str) -> set[str]:
    return set(
        session.scalars(
            select(WebhookDelivery.endpoint_id)
            .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
            .where(WebhookEvent.order_id == order_id)
        )
    )


@pytest.mark.parametrize("how", ["get", "relationship"])
def test_a_session_that_changes_an_endpoint_it_loaded_sees_the_change_at_once(
    ledger: sessionmaker[Session], how: str
) -> None:
    """An endpoint loaded (by a query or through a delivery's relationship) and changed in the session
    after the endpoints were read and kept: the next event follows the change, not what was kept."""
    first, _ = register(ledger, "http://127.0.0.1:9/a", ["order.paid"])
    seed = pay_order(ledger)  # a delivery whose relationship leads to the endpoint
    with ledger() as session:
        one = add_order(session, merchant=MERCHANT)
        two = add_order(session, merchant=MERCHANT)
        session.commit()
        transition(session, one, OrderState.PAID, "OrderPaid in block 7")  # reads and keeps [first]
        if how == "get":
            endpoint = session.get(WebhookEndpoint, first)
        else:
            delivery = session.scalars(
                select(WebhookDelivery)
                .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
                .where(WebhookEvent.order_id == seed)
            ).one()
            endpoint = delivery.endpoint
        assert endpoint is not None
        endpoint.event_types = ["order.settled"]  # no longer wants order.paid; not flushed yet
        transition(session, two, OrderState.PAID, "OrderPaid in block 7")
        session.commit()
        assert _endpoints_of(session, one.id) == {first}
        assert _endpoints_of(session, two.id) == set()


def test_a_stage_never_holds_an_endpoint_object(ledger: sessionmaker[Session]) -> None:
    """The oracle's stages read the endpoints as columns: no endpoint object enters their session, so
    none can be changed there, and the events of the stage still reach every subscribed endpoint."""
    first, _ = register(ledger, "http://127.0.0.1:9/a", ["order.paid"])
    with ledger() as session:
        orders = [add_order(session, merchant=MERCHANT) for _ in range(3)]
        session.commit()
        for order in orders:
            transition(session, order, OrderState.PAID, "OrderPaid in block 7")
        assert not any(isinstance(obj, WebhookEndpoint) for obj in session.identity_map.values())
        session.commit()
        assert [_endpoints_of(session, order.id) for order in orders] == [{first}] * 3

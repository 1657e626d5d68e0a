"""A SIGKILL between an order's state change and its webhook loses no event.

For each webhook failpoint (``oracles.failpoints.WEBHOOK_FAILPOINTS``) a real child process moves an
order to ``paid`` (committing the state change and, with it, the outbox event), then runs the delivery
job with ``CARDLESS_FAILPOINTS=<point>`` and dies by SIGKILL there. A fresh delivery job in this process
(its clock past the dead worker's lease) then delivers to a real HTTP receiver on loopback, which
verifies the signature with the documented verifier:

- ``webhook.before_send``: the dead process sent nothing; the event arrives once.
- ``webhook.after_send``: the dead process sent it but never recorded it; it arrives again with the
  same event id, and the receiver handles it once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardless.ledger import WebhookAttempt, WebhookDelivery, WebhookEvent
from oracles.failpoints import WEBHOOK_FAILPOINTS
from tests.oracles.test_webhooks import MERCHANT, Clock, Receiver, register, run, sender
from tests.support.orders import add_order

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, sys
from cardless.ledger import create_engine_for, session_factory
from cardless.ledger.cipher import AccountCipher
from cardless.ledger.models import Order, OrderState
from cardless.ledger.transitions import transition
from oracles.webhooks import DeliveryPolicy, WebhookSender

url, order_id = sys.argv[1], sys.argv[2]
sessions = session_factory(create_engine_for(url))
with sessions.begin() as session:
    transition(session, session.get(Order, order_id), OrderState.PAID, "OrderPaid in block 7")
print("state change committed", flush=True)
policy = DeliveryPolicy(allow_private=True)
job = WebhookSender(sessions, AccountCipher(bytes(range(32))), policy, owner="doomed")
asyncio.run(job.deliver_due())
print("not killed", flush=True)
"""

EXPECTED_ARRIVALS = {"webhook.before_send": 1, "webhook.after_send": 2}


def test_every_webhook_failpoint_is_crash_tested() -> None:
    assert set(EXPECTED_ARRIVALS) == set(WEBHOOK_FAILPOINTS)


# Each scenario starts a Python process (~2-5 s of imports): the one the issue names ("between the state
# change and the delivery") runs in `make test`, the other in `make test-long`.
@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=[pytest.mark.long] if p != "webhook.before_send" else [])
        for p in WEBHOOK_FAILPOINTS
    ],
)
def test_sigkill_between_the_state_change_and_the_delivery_loses_no_event(
    point: str, ledger: sessionmaker[Session], tmp_path: Path
) -> None:
    receiver = Receiver()
    try:
        _, receiver.secret = register(ledger, receiver.url)
        with ledger.begin() as session:
            order_id = add_order(session, merchant=MERCHANT).id
        url = f"sqlite:///{tmp_path / 'cardless.db'}"  # the `ledger` fixture's file
        env = {**os.environ, "CARDLESS_FAILPOINTS": point, "PYTHONPATH": str(ROOT)}
        child = subprocess.run(
            [sys.executable, "-c", CHILD, url, order_id], env=env, capture_output=True, timeout=60
        )
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
        assert child.stdout.decode().splitlines() == ["state change committed"]
        sent_before_crash = len(receiver.received)
        assert sent_before_crash == (1 if point == "webhook.after_send" else 0)
        with ledger() as session:
            event = session.scalars(select(WebhookEvent)).one()  # committed with the state change
            delivery = session.scalars(select(WebhookDelivery)).one()
            assert delivery.status == "pending" and delivery.lease_owner == "doomed"
            assert session.scalars(select(WebhookAttempt)).all() == []

        clock = Clock()
        assert run(sender(ledger, clock)) == 0  # the dead worker's lease still holds
        clock.offset = timedelta(seconds=61)  # ... until it expires
        receiver.now = lambda: clock().timestamp()
        assert run(sender(ledger, clock)) == 1

        assert len(receiver.received) == EXPECTED_ARRIVALS[point]
        assert {r["id"] for r in receiver.received} == {event.id}
        assert all(r["verified"] for r in receiver.received)
        assert receiver.handled == [event.id]  # a duplicate is recognised by its id and handled once
        assert [r["duplicate"] for r in receiver.received] == [False, True][: EXPECTED_ARRIVALS[point]]
        with ledger() as session:
            assert session.scalars(select(WebhookDelivery)).one().status == "delivered"
    finally:
        receiver.close()

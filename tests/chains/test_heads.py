"""The oracle's ``newHeads`` wake-up (``oracles.worker.follow_heads``) against a real anvil, and what it
does against a node without WebSockets: nothing but keep trying, the loop polls meanwhile."""

from __future__ import annotations

import asyncio
import contextlib

from web3 import HTTPProvider, Web3

from cardless.devchain.anvil import AnvilNode
from oracles.worker import follow_heads
from tests.support.node import rpc


def test_a_mined_block_wakes_the_oracle_at_once(anvil: AnvilNode) -> None:
    w3 = Web3(HTTPProvider(anvil.url))

    async def scenario() -> list[float]:
        wake = asyncio.Event()
        task = asyncio.create_task(follow_heads("ws://" + anvil.url.removeprefix("http://"), wake))
        waits: list[float] = []
        try:
            await asyncio.sleep(0.5)  # subscribed
            for _ in range(3):
                wake.clear()
                loop = asyncio.get_running_loop()
                started = loop.time()
                await asyncio.to_thread(rpc, w3, "evm_mine")
                await asyncio.wait_for(wake.wait(), timeout=2)
                waits.append(loop.time() - started)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return waits

    waits = asyncio.run(scenario())
    assert len(waits) == 3 and max(waits) < 1.0


def test_a_node_without_websockets_never_wakes_and_is_retried_quietly() -> None:
    async def scenario() -> bool:
        wake = asyncio.Event()
        # nothing listens on port 9 of loopback (discard): refused at once, retried after 1 s
        task = asyncio.create_task(follow_heads("ws://127.0.0.1:9", wake))
        await asyncio.sleep(0.3)
        alive = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return alive and not wake.is_set()

    assert asyncio.run(scenario())

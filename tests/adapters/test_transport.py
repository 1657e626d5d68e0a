"""``adapters.transport.LeanTransport`` against raw sockets: what a hostile or odd provider can send.

The conformance suite (tests/adapters/test_http_adapter.py) runs every fault mode of the simulator
through it; these are the bounds a real server can break that the simulator never does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from adapters.transport import LeanTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def _reply(body: bytes, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def test_kept_alive_connections_are_reused_and_a_closed_one_is_not() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        served = 0
        while True:
            try:
                request = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            assert b"Accept-Encoding: identity" in request and request.endswith(b'{"n":1}')
            served += 1
            if served == 3:  # then closes, as a server's keep-alive timeout does
                writer.write(_reply(b'{"ok":true}', extra=b"Connection: close\r\n"))
                await writer.drain()
                break
            writer.write(_reply(b'{"ok":true}'))
            await writer.drain()
        writer.close()

    async def scenario() -> list[int]:
        server, url = await _serve(handler)
        async with server, httpx.AsyncClient(transport=LeanTransport()) as client:
            statuses = []
            for _ in range(5):
                response = await client.post(url + "/topup?x=1", json={"n": 1})
                statuses.append(response.status_code)
                assert response.json() == {"ok": True}
            return statuses

    assert asyncio.run(scenario()) == [200] * 5
    assert len(connections) == 2  # three on the first connection, then a new one


def test_a_reply_larger_than_the_bound_is_a_protocol_error_chunked_or_not() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if b"/chunked" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(40):
                writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 65536)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(handler)
        async with server, httpx.AsyncClient(transport=LeanTransport(max_reply_bytes=32 * 1024)) as client:
            for path in ("/chunked", "/length"):
                with pytest.raises(httpx.RemoteProtocolError, match="larger than"):
                    await client.post(url + path, json={})

    asyncio.run(scenario())


def test_a_dribbling_or_silent_server_times_out_and_garbage_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if b"/silent" in request:
            await asyncio.sleep(5)
        elif b"/dribble" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):  # a byte every 50 ms: each read is quick, the whole is not
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
        else:
            writer.write(b"SMTP ready\r\n\r\n")
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(handler)
        timeout = httpx.Timeout(connect=1, read=0.3, write=1, pool=1)
        async with server, httpx.AsyncClient(transport=LeanTransport(), timeout=timeout) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(url + "/silent", json={})
            with pytest.raises(httpx.ReadTimeout):  # bounded by 4 x read as a whole
                await client.post(url + "/dribble", json={})
            with pytest.raises(httpx.RemoteProtocolError, match="status line"):
                await client.post(url + "/garbage", json={})
            with pytest.raises(httpx.ConnectError):
                await client.post("http://127.0.0.1:9/", json={})

    asyncio.run(scenario())


def test_calls_beyond_max_connections_wait_for_a_free_one_then_time_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(0.5)
        writer.write(_reply(b"{}"))
        await writer.drain()
        writer.close()

    async def scenario() -> list[str]:
        server, url = await _serve(handler)
        transport = LeanTransport(httpx.Limits(max_connections=2))
        timeout = httpx.Timeout(connect=1, read=2, write=1, pool=0.2)
        async with server, httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            results = await asyncio.gather(
                *(client.post(url, json={}) for _ in range(3)), return_exceptions=True
            )
        return sorted(type(r).__name__ for r in results)

    assert asyncio.run(scenario()) == ["PoolTimeout", "Response", "Response"]


def test_the_gateways_aiohttp_transport_bounds_replies_and_asks_for_identity() -> None:
    """``cardless.cli.provider_http.AiohttpTransport`` (the gateway's account checks) keeps the same
    bounds: identity encoding whatever the client asked, and no reply read past ``max_reply_bytes``."""
    from cardless.cli.provider_http import AiohttpTransport

    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        seen.append(request)
        if b"/chunked" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(40):
                writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            writer.write(b"0\r\n\r\n")
        elif b"/length" in request:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 65536)
        else:
            writer.write(_reply(b'{"ok":true}', extra=b"Connection: close\r\n"))
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(handler)
        transport = AiohttpTransport(max_reply_bytes=32 * 1024)
        async with server, httpx.AsyncClient(transport=transport) as client:
            ok = await client.post(url + "/small", json={}, headers={"Accept-Encoding": "gzip, br"})
            assert ok.json() == {"ok": True}
            for path in ("/chunked", "/length"):
                with pytest.raises(httpx.RemoteProtocolError, match="larger than"):
                    await client.post(url + path, json={})

    asyncio.run(scenario())
    heads = [r.split(b"\r\n\r\n")[0].lower() for r in seen]
    assert all(h.count(b"accept-encoding:") == 1 and b"accept-encoding: identity" in h for h in heads)

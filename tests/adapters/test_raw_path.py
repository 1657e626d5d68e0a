"""``HttpAdapter``'s raw path: a POST written as bytes by the adapter and sent through
``LeanTransport.exchange`` (``adapters.transport.raw_exchange``), without httpx's client layer.

It must be invisible: the same bytes on the wire as httpx's client through ``LeanTransport``, and the
same outcome for every reply a provider can send, hostile ones included (oversized, slow, refused,
malformed, compressed, with a cookie). Each test runs both paths against one raw-socket server and
compares; the conformance suite (tests/adapters/test_http_adapter.py) runs the simulator's fault modes
through both as well."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from adapters import ProviderUnreachable
from adapters.http import HttpAdapter
from adapters.provider_file import Timeouts, bundled_provider_file, load_provider_file
from adapters.transport import LeanTransport, raw_exchange
from cardless.cli.provider_metrics import PROVIDER_CALLS, PROVIDER_ERRORS, TimedTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

SECRETS = {
    "CARDLESS_SIM_SECRET": "s3cret",
    "CARDLESS_SIM_CALLBACK_SECRET": "c4llback",
    "CARDLESS_SIM_MD5_SECRET": "md5-s3cret",
    "CARDLESS_SIM_MD5_CALLBACK_SECRET": "md5-c4llback",
}
OK = b'{"code":"OK","nickname":"Traveller"}'


class _HttpxWay(httpx.AsyncBaseTransport):
    """``LeanTransport`` behind httpx's client only: no ``raw_exchange``, so the adapter takes httpx's way."""

    def __init__(self, inner: LeanTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def _reply(body: bytes, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        extra,
        body,
    )


def _adapter(url: str, client: httpx.AsyncClient, provider: str = "simulator", **config: Any) -> HttpAdapter:
    loaded = load_provider_file(bundled_provider_file(provider))
    short = Timeouts(connect=1.0, read=0.3, write=1.0, pool=0.5)
    loaded = loaded.model_copy(update={"timeouts": short, **config})
    return HttpAdapter(loaded, client, secrets=SECRETS, base_url=url, clock=lambda: 1_760_000_000)


async def _both_ways(
    handler: Handler, calls: Callable[[HttpAdapter], Awaitable[Any]], **config: Any
) -> dict[str, Any]:
    """``calls(adapter)`` through the raw path and through httpx's way, each with a fresh client,
    against one server: ``{"raw": outcome, "httpx": outcome}`` (an exception is an outcome)."""
    server, url = await _serve(handler)
    outcomes: dict[str, Any] = {}
    async with server:
        for way in ("raw", "httpx"):
            lean = LeanTransport(httpx.Limits(max_connections=4))
            transport: httpx.AsyncBaseTransport = lean if way == "raw" else _HttpxWay(lean)
            async with httpx.AsyncClient(transport=transport) as client:
                adapter = _adapter(url, client, **config)
                assert (adapter._raw is not None) == (way == "raw")
                try:
                    outcomes[way] = await calls(adapter)
                except Exception as exc:
                    outcomes[way] = (type(exc).__name__, str(exc))
    return outcomes


@pytest.mark.parametrize(
    ("provider", "encoding"),
    [("simulator", "json"), ("simulator-md5", "json"), ("simulator", "form")],
)
def test_the_raw_path_sends_the_bytes_httpx_sends(provider: str, encoding: str) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(_reply(OK))
            await writer.drain()
        writer.close()

    async def calls(adapter: HttpAdapter) -> Any:
        first = await adapter.validate("genshin-60", "123456789")
        second = await adapter.validate("genshin-60", "9" * 40 + " ü&=")  # escaping, non-ASCII
        return first, second

    outcomes = asyncio.run(_both_ways(handler, calls, provider=provider, body_encoding=encoding))
    assert outcomes["raw"] == outcomes["httpx"]
    assert outcomes["raw"][0].ok and outcomes["raw"][0].nickname == "Traveller"
    assert len(seen) == 4
    assert seen[:2] == seen[2:]  # byte for byte, the head (its header order) and the body
    assert b"Accept-Encoding: identity\r\n" in seen[0] and b"Connection" not in seen[0]
    content_type = b"application/json" if encoding == "json" else b"application/x-www-form-urlencoded"
    assert b"Content-Type: " + content_type in seen[0]


def _hostile(kind: str) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
        except asyncio.IncompleteReadError:
            return
        if kind == "huge-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 65536)
        elif kind == "huge-chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(1100):
                writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        elif kind == "huge-head":
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"y" * 70_000 + b"\r\n\r\n")
        elif kind == "slow":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{")
            await writer.drain()
            await asyncio.sleep(2)
        elif kind == "garbage":
            writer.write(b"SMTP ready\r\n\r\n")
        elif kind == "cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{")
        elif kind == "5xx":
            writer.write(_reply(b'{"code":"OK"}', status=b"503 Service Unavailable"))
        elif kind == "not-json":
            writer.write(_reply(b"<html>maintenance</html>"))
        elif kind == "bad-gzip":
            writer.write(_reply(b"not gzip at all", extra=b"Content-Encoding: gzip\r\n"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("huge-length", "RemoteProtocolError: the reply is larger than"),
        ("huge-chunked", "RemoteProtocolError: the reply is larger than"),
        ("huge-head", "RemoteProtocolError: the reply's headers are too large"),
        ("slow", "ReadTimeout"),
        ("garbage", "RemoteProtocolError: not an HTTP/1.x status line"),
        ("cut", "RemoteProtocolError: the provider closed the connection"),
        ("5xx", "HTTP 503"),
        ("not-json", "HTTP 200 reply is not JSON"),
        ("bad-gzip", "DecodingError"),
    ],
)
def test_a_hostile_reply_is_refused_with_the_same_error_on_both_paths(kind: str, error: str) -> None:
    outcomes = asyncio.run(_both_ways(_hostile(kind), lambda a: a.validate("genshin-60", "123456789")))
    assert outcomes["raw"] == outcomes["httpx"]
    name, message = outcomes["raw"]
    assert name == ProviderUnreachable.__name__ and error in message


def test_a_refused_connection_is_the_same_error_on_both_paths() -> None:
    async def scenario() -> dict[str, Any]:
        server, url = await _serve(_hostile("5xx"))
        server.close()
        await server.wait_closed()  # the port is free again: nothing listens
        outcomes: dict[str, Any] = {}
        for way in ("raw", "httpx"):
            lean = LeanTransport()
            async with httpx.AsyncClient(transport=lean if way == "raw" else _HttpxWay(lean)) as client:
                try:
                    await _adapter(url, client).validate("genshin-60", "123456789")
                except ProviderUnreachable as exc:
                    outcomes[way] = str(exc)
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes["raw"] == outcomes["httpx"] and "ConnectError" in outcomes["raw"]


def test_a_compressed_reply_is_decoded_and_a_cookie_kept_as_httpx_does() -> None:
    """A provider that compresses anyway, or sets a cookie: read through an ``httpx.Response`` as the
    client reads it; the kept cookie then goes back with the next request (httpx's way from then on)."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            extra = b"Content-Encoding: gzip\r\nSet-Cookie: session=abc; Path=/\r\n"
            writer.write(_reply(gzip.compress(OK), extra=extra))
            await writer.drain()
        writer.close()

    async def calls(adapter: HttpAdapter) -> Any:
        return [await adapter.validate("genshin-60", "123456789") for _ in range(2)]

    outcomes = asyncio.run(_both_ways(handler, calls))
    assert outcomes["raw"] == outcomes["httpx"]
    assert [v.nickname for v in outcomes["raw"]] == ["Traveller", "Traveller"]
    assert seen[:2] == seen[2:]
    assert b"Cookie: session=abc" not in seen[0] and b"Cookie: session=abc" in seen[1]


def test_a_client_that_adds_to_requests_keeps_httpx_s_way() -> None:
    """Auth, hooks, a base URL, redirects followed or mounts: things the raw path would leave out."""

    async def hook(request: httpx.Request) -> None:
        pass

    async def scenario() -> list[bool]:
        ways = []
        for extra in (
            {"auth": ("user", "pass")},
            {"event_hooks": {"request": [hook]}},
            {"base_url": "http://127.0.0.1:1"},
            {"follow_redirects": True},
            {"params": {"a": "b"}},
            {"mounts": {"http://example.test": httpx.AsyncHTTPTransport()}},
            {},
        ):
            async with httpx.AsyncClient(transport=LeanTransport(), **extra) as client:
                ways.append(_adapter("http://127.0.0.1:1", client)._raw is not None)
        return ways

    assert asyncio.run(scenario()) == [False] * 6 + [True]


def _samples(provider: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in (PROVIDER_CALLS, PROVIDER_ERRORS):
        for family in metric.collect():
            for sample in family.samples:
                if sample.labels.get("provider") == provider and sample.name.endswith(("_count", "_total")):
                    key = f"{sample.name}:{sample.labels['outcome']}"
                    counts[key] = counts.get(key, 0) + sample.value
    return counts


def test_the_metrics_transport_times_the_raw_path_as_it_times_httpx_s() -> None:
    """``TimedTransport`` (the provider metrics) offers its inner transport's raw path, timed and counted
    with the same outcomes: a status class, or the exception's name."""
    replies = iter([_reply(OK), _reply(b"{}", status=b"502 Bad Gateway"), b"garbage\r\n\r\n"])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
        except asyncio.IncompleteReadError:
            return
        writer.write(next(replies))
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await _serve(handler)
        timed = TimedTransport("raw-path-test", LeanTransport())
        assert raw_exchange(timed) is not None
        assert raw_exchange(TimedTransport("no-raw", _HttpxWay(LeanTransport()))) is None
        async with server, httpx.AsyncClient(transport=timed) as client:
            adapter = _adapter(url, client)
            assert adapter._raw is not None
            await adapter.validate("genshin-60", "123456789")
            for _ in range(2):
                with pytest.raises(ProviderUnreachable):
                    await adapter.validate("genshin-60", "123456789")

    asyncio.run(scenario())
    counts = _samples("raw-path-test")
    assert counts == {
        "cardless_provider_request_seconds_count:2xx": 1,
        "cardless_provider_request_seconds_count:5xx": 1,
        "cardless_provider_request_seconds_count:RemoteProtocolError": 1,
        "cardless_provider_errors_total:5xx": 1,
        "cardless_provider_errors_total:RemoteProtocolError": 1,
    }

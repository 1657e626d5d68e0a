"""A lean HTTP/1.1 transport for the provider clients: kept-alive connections, bounded replies.

httpx's own transport (httpcore on anyio) cost the oracle about 2 ms of CPU per provider call, a fifth
of its time per order (docs/benchmarks.md); the exchange a provider needs is small: one request with a
``Content-Length`` body, one reply. :class:`LeanTransport` is an ``httpx.AsyncBaseTransport``, so the
adapters keep their ``httpx.AsyncClient`` (request building, redirects off, the client's timeouts,
``httpx.MockTransport`` in tests) and only the wire part changes:

- connections per (scheme, host, port), at most ``limits.max_connections`` open at once (a request
  waits up to the ``pool`` timeout for one, else ``httpx.PoolTimeout``), up to
  ``limits.max_keepalive_connections`` kept idle for at most ``limits.keepalive_expiry`` seconds;
  an idle connection the server closed is never reused;
- the ``connect``, ``write`` and ``read`` timeouts of each request (``httpx.ConnectTimeout``,
  ``WriteTimeout``, ``ReadTimeout``); a read timeout bounds each read, and the whole reply is bounded
  by ``read`` x 4 as well, so a server dribbling one byte at a time cannot hold a call forever;
- a reply larger than ``max_reply_bytes`` (1 MiB), a header block over 64 KiB, or a malformed status
  line, header or chunk is ``httpx.RemoteProtocolError``: to the adapter, no usable reply (``UNKNOWN``),
  as a reset is. Nothing is ever retried here: a request sent is never sent again by the transport;
- https through the standard library's TLS (certificate and host name checked, the default context).

Only what a provider reply needs: no HTTP/2, no proxies, no ``Expect: 100-continue``, no upgrades.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Final, Protocol

import httpx

__all__ = ["MAX_REPLY_BYTES", "LeanTransport", "RawExchange", "RawReply", "raw_exchange", "request_head"]

MAX_REPLY_BYTES: Final = 1024 * 1024
"""The largest reply body read from a provider (a top-up reply is a few hundred bytes)."""
_MAX_HEAD: Final = 64 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True, slots=True)
class RawReply:
    """A provider's reply as :meth:`LeanTransport.exchange` read it: the body whole, as sent (no
    ``Content-Encoding`` decoded), the headers as sent."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def request_head(request: httpx.Request) -> tuple[list[bytes], bool]:
    """The request line and header lines :class:`LeanTransport` sends for ``request`` (no CRLFs), and
    whether they hold a ``Content-Length``: httpx's headers, but ``Accept-Encoding: identity`` and no
    ``Connection`` or ``Transfer-Encoding`` (the body is sent whole, the connection kept alive)."""
    lines = [f"{request.method} {request.url.raw_path.decode('ascii')} HTTP/1.1".encode("ascii")]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered in (b"transfer-encoding", b"connection"):
            continue
        if lowered == b"accept-encoding":
            # identity only: the size bound is on the bytes read, and a compressed reply could inflate
            # past it (httpx would decode it)
            lines.append(b"Accept-Encoding: identity")
            continue
        if lowered == b"content-length":
            has_length = True
        lines.append(name + b": " + value)
    return lines, has_length


class RawExchange(Protocol):
    """:meth:`LeanTransport.exchange`'s signature: what a transport offers through ``raw_exchange()``."""

    async def __call__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        message: bytes,
        timeouts: Mapping[str, float | None],
        *,
        head: bool = False,
        request: httpx.Request | None = None,
    ) -> RawReply: ...


def raw_exchange(transport: object) -> RawExchange | None:
    """The request-as-bytes path of ``transport`` (its ``raw_exchange()``), or None when it has none: a
    wrapper (the metrics' timing transport) offers one when what it wraps does."""
    offer = getattr(transport, "raw_exchange", None)
    found = offer() if callable(offer) else None
    return found if callable(found) else None


class _Connection:
    __slots__ = ("idle_since", "key", "reader", "writer")

    def __init__(self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.key = key
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float | None) -> bool:
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        return expiry is None or now - self.idle_since < expiry

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        limits: httpx.Limits | None = None,
        *,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        self.max_connections = limits.max_connections
        self.max_keepalive = limits.max_keepalive_connections
        self.keepalive_expiry = limits.keepalive_expiry
        self.max_reply_bytes = max_reply_bytes
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    # -- the exchange ---------------------------------------------------------------------------

    def raw_exchange(self) -> RawExchange:
        """:meth:`exchange`, for :func:`raw_exchange`."""
        return self.exchange

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        lines, has_length = request_head(request)
        body = await request.aread()
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
        reply = await self.exchange(
            url.scheme,
            url.host,
            url.port,
            b"\r\n".join(lines) + b"\r\n\r\n" + body,
            request.extensions.get("timeout", {}),
            head=request.method == "HEAD",
            request=request,
        )
        return httpx.Response(
            reply.status,
            headers=reply.headers,
            content=reply.body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def exchange(
        self,
        scheme: str,
        host: str,
        port: int | None,
        message: bytes,
        timeouts: Mapping[str, float | None],
        *,
        head: bool = False,
        request: httpx.Request | None = None,
    ) -> RawReply:
        """Send ``message`` (a whole HTTP/1.1 request: head and body, the body with its
        ``Content-Length``, ``Accept-Encoding: identity``, no ``Connection`` header) and read its
        reply, within every bound above. The path :meth:`handle_async_request` takes once httpx's
        request is written out; :class:`adapters.http.HttpAdapter` calls it directly with a request
        it wrote itself, without httpx's request and response objects (``request``, when given, is
        named by the exceptions). Raises what :meth:`handle_async_request` raises."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"{scheme!r} is not http or https", request=request)
        key = (scheme, host, port or _DEFAULT_PORTS[scheme])
        if self._slots is None and self.max_connections is not None:
            self._slots = asyncio.Semaphore(self.max_connections)
        if self._slots is not None:
            try:
                # asyncio.timeout, not wait_for: no task per step (``_exchange``); a free slot never waits
                async with asyncio.timeout(None if not self._slots.locked() else timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection to the provider", request=request) from None
        try:
            connection = self._checkout(key) or await self._connect(key, timeouts.get("connect"), request)
            try:
                return await self._exchange(connection, message, timeouts, head, request)
            except BaseException:
                connection.close()
                raise
        finally:
            if self._slots is not None:
                self._slots.release()

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable(now, self.keepalive_expiry):
                return connection
            connection.close()
        return None

    def _checkin(self, connection: _Connection) -> None:
        if self._closed or (self.max_keepalive is not None and self._idle_count >= self.max_keepalive):
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_count += 1

    async def _connect(
        self, key: tuple[str, str, int], timeout: float | None, request: httpx.Request | None
    ) -> _Connection:
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._ssl or ssl.create_default_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=_MAX_HEAD
                ),
                timeout,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from exc
        return _Connection(key, reader, writer)

    async def _exchange(
        self,
        connection: _Connection,
        message: bytes,
        timeouts: Mapping[str, float | None],
        head: bool,
        request: httpx.Request | None,
    ) -> RawReply:
        writer = connection.writer
        writer.write(message)
        try:
            async with asyncio.timeout(timeouts.get("write")):
                await writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(f"{type(exc).__name__}: {exc}", request=request) from exc
        read = timeouts.get("read")
        try:
            async with asyncio.timeout(None if read is None else 4 * read):
                status, headers, payload, keep = await self._read_reply(
                    connection.reader, read, head, request
                )
        except TimeoutError:
            raise httpx.ReadTimeout("the provider's reply timed out", request=request) from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError(
                "the provider closed the connection before its reply was complete", request=request
            ) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("the reply's headers are too large", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
        if keep:
            self._checkin(connection)
        else:
            connection.close()
        return RawReply(status, headers, payload)

    async def _read_reply(
        self, reader: asyncio.StreamReader, read: float | None, is_head: bool, request: httpx.Request | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        async def bounded(step: Coroutine[Any, Any, bytes]) -> bytes:
            # each read bounded in place (asyncio.timeout): wait_for ran every read as a task of its own
            try:
                async with asyncio.timeout(read):
                    return await step
            except TimeoutError:
                raise httpx.ReadTimeout("the provider's reply timed out", request=request) from None

        while True:
            head = await bounded(reader.readuntil(b"\r\n\r\n"))
            status_line, _, rest = head.partition(b"\r\n")
            parts = status_line.split(b" ", 2)
            if (
                len(parts) < 2
                or not parts[0].startswith(b"HTTP/1.")
                or not parts[1].isdigit()
                or len(parts[1]) != 3
            ):
                raise httpx.RemoteProtocolError(
                    f"not an HTTP/1.x status line: {status_line[:80]!r}", request=request
                )
            status = int(parts[1])
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue, 103 Early Hints) are skipped; 101 is not something we asked for
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in rest[:-4].split(b"\r\n") if rest else []:
            if not line:
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}", request=request)
            value = value.strip()
            lowered = name.lower()
            if lowered == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise httpx.RemoteProtocolError("a bad Content-Length", request=request)
                length = int(value)
            elif lowered == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
                if not chunked:
                    raise httpx.RemoteProtocolError(
                        f"unsupported Transfer-Encoding {value[:40]!r}", request=request
                    )
            elif lowered == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                if b"close" in tokens:
                    keep = False
                elif b"keep-alive" in tokens:
                    keep = True
            headers.append((name, value))
        if is_head or status in (204, 304) or 100 <= status < 200:
            return status, headers, b"", keep and status != 101
        limit = self.max_reply_bytes
        if chunked:
            parts_read: list[bytes] = []
            total = 0
            while True:
                size_line = await bounded(reader.readuntil(b"\r\n"))
                size_text = size_line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("a malformed chunk size", request=request) from None
                if size < 0 or total + size > limit:
                    raise httpx.RemoteProtocolError(
                        f"the reply is larger than {limit} bytes", request=request
                    )
                if size == 0:
                    while (await bounded(reader.readuntil(b"\r\n"))) != b"\r\n":  # trailers
                        pass
                    break
                chunk = await bounded(reader.readexactly(size + 2))
                if chunk[-2:] != b"\r\n":
                    raise httpx.RemoteProtocolError("a chunk without its CRLF", request=request)
                parts_read.append(chunk[:-2])
                total += size
            return status, headers, b"".join(parts_read), keep
        if length is not None:
            if length > limit:
                raise httpx.RemoteProtocolError(f"the reply is larger than {limit} bytes", request=request)
            return status, headers, await bounded(reader.readexactly(length)), keep
        # neither: the body runs to the end of the connection (HTTP/1.0 style), bounded
        data = bytearray()
        while True:
            piece = await bounded(reader.read(65536))
            if not piece:
                break
            data += piece
            if len(data) > limit:
                raise httpx.RemoteProtocolError(f"the reply is larger than {limit} bytes", request=request)
        return status, headers, bytes(data), False

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                connection.close()

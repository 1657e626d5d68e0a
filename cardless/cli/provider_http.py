"""An httpx transport that sends through aiohttp: the gateway's provider calls (account checks).

The adapters keep their one contract, an injected ``httpx.AsyncClient``; only the bytes on the wire go
through aiohttp's connection pool and C HTTP parser instead of httpcore and h11, which are pure Python:
on loopback httpcore cost about 0.75 ms of CPU per call against aiohttp's 0.10 ms, and a fifth of a
quote's CPU was the account check's HTTP (docs/benchmarks.md).

What the adapters rely on is kept:

- the request as httpx built it (method, URL with its query, headers, body), never redirected, and the
  body read whole with its ``Content-Encoding`` left for httpx to decode, as httpcore does;
- the per-request timeouts httpx carries (connect, read, write, pool) become aiohttp's; every failure
  is an :class:`httpx.RequestError` (a timeout an :class:`httpx.TimeoutException`), which the adapters
  already read as "no answer";
- at most ``limit`` connections at once, kept alive between calls;
- the provider's reply bounded as :class:`adapters.transport.LeanTransport` bounds the oracle's:
  ``Accept-Encoding: identity`` (a compressed reply could inflate past any bound) and at most
  ``max_reply_bytes`` (1 MiB) read, else :class:`httpx.RemoteProtocolError`, which the adapters read as
  "no answer". A hostile provider cannot make the gateway hold more than that per call.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx

from adapters.transport import MAX_REPLY_BYTES

__all__ = ["AiohttpTransport"]

_NOT_FORWARDED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"accept-encoding"}
)
"""aiohttp writes the first four itself from the URL and the body; the encoding is always identity."""
_READ_CHUNK = 64 * 1024


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, limit: int = 100, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.limit = limit
        self.max_reply_bytes = max_reply_bytes
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that serves the calls (aiohttp binds to it).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() not in _NOT_FORWARDED
        ]
        headers.append(("Accept-Encoding", "identity"))
        body = await request.aread()
        try:
            async with self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
            ) as reply:
                if (reply.content_length or 0) > self.max_reply_bytes:
                    raise httpx.RemoteProtocolError(
                        f"reply of {reply.content_length} bytes, larger than {self.max_reply_bytes}",
                        request=request,
                    )
                parts: list[bytes] = []
                size = 0
                async for part in reply.content.iter_chunked(_READ_CHUNK):
                    size += len(part)
                    if size > self.max_reply_bytes:
                        raise httpx.RemoteProtocolError(
                            f"reply larger than {self.max_reply_bytes} bytes", request=request
                        )
                    parts.append(part)
                content = b"".join(parts)
                return httpx.Response(
                    reply.status,
                    headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in reply.raw_headers],
                    content=content,
                    request=request,
                )
        except aiohttp.ServerTimeoutError as exc:  # a socket read or connect ran out
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except TimeoutError as exc:  # the pool (whole-request) timeout
            raise httpx.PoolTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

"""The generic HTTP adapter: one class, driven by a provider file, for every HTTP top-up provider.

Adding a provider is a TOML file in ``adapters/providers/`` (see ``adapters.provider_file``), not
code. The adapter takes an ``httpx.AsyncClient`` by injection; give each provider its own client so
a provider that hangs cannot exhaust a connection pool the others need.

How replies become outcomes (the rules the oracle relies on):

- No usable reply to ``submit`` or ``query`` (timeout, reset, 5xx, not JSON, a code or status the
  file does not map, a reply about another order, a success without its receipt fields) is
  ``UNKNOWN``. Nothing is ever called a failure unless the provider said so in words it mapped.
- A refusal code or a failed status is ``FAILED_NOT_CHARGED``; ``submit`` raises it as
  ``ProviderRefused`` (reroute) or ``AccountRejected`` (refund); ``query`` returns it.
- ``bad_signature``, ``bad_request`` and ``idempotency_conflict`` codes raise config errors from
  every call (the provider acted on nothing).
- Each adapter has a circuit breaker (``adapters.health``). While it is open, ``submit``,
  ``validate`` and ``balance`` raise ``ProviderUnavailable`` without sending anything, and ``query``
  answers ``UNKNOWN``.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlencode

import httpx

from adapters._base import (
    ProviderAdapter,
    Receipt,
    Refusal,
    TopupRequest,
    TopupResult,
    TopupStatus,
    Validation,
)
from adapters._exceptions import (
    AuthenticationFailed,
    ConfigError,
    ForgedCallback,
    IdempotencyConflict,
    MissingSecret,
    ProviderUnavailable,
    ProviderUnreachable,
    RequestRejected,
    StaleCallback,
)
from adapters.health import CircuitBreaker, HealthSnapshot
from adapters.provider_file import CodeMeaning, Operation, ProviderFile, ReplyFields, load_provider_file
from adapters.signing import callback_message, hmac_sha256_hex, render_value, sign_params, verify_params
from adapters.transport import RawExchange, raw_exchange, request_head
from cardless.protocol.jsonlimits import loads_bounded

__all__ = ["HttpAdapter"]

_REFUSALS: Final[Mapping[str, Refusal]] = {
    "invalid_account": Refusal.INVALID_ACCOUNT,
    "unknown_sku": Refusal.UNKNOWN_SKU,
    "out_of_stock": Refusal.OUT_OF_STOCK,
    "insufficient_balance": Refusal.INSUFFICIENT_BALANCE,
    "rejected": Refusal.REJECTED,
}

_STATUSES: Final[Mapping[str, TopupStatus]] = {
    "succeeded": TopupStatus.SUCCEEDED,
    "processing": TopupStatus.PROCESSING,
    "failed_not_charged": TopupStatus.FAILED_NOT_CHARGED,
    "reversed": TopupStatus.REVERSED,
}

_MISSING: Final = object()

# ASCII digits only: str.isdigit() also takes '²' and '١', which int() then refuses or reads as
# digits nobody wrote. 78 digits hold any uint256; longer is not a number a provider means.
_INTEGER: Final = re.compile(r"-?[0-9]{1,78}")
_INDEX: Final = re.compile(r"[0-9]{1,9}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Reply:
    """What came back: a JSON object, or ``problem`` saying why there is none worth reading."""

    body: Mapping[str, Any] | None
    http_status: int | None
    problem: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class _Wire:
    """One operation's request as the raw path writes it, but for the body and its length: the bytes
    httpx's client and :class:`adapters.transport.LeanTransport` would send, taken once from httpx's own
    request (its headers, their order, the ``Host``), split around ``Content-Length``."""

    url: httpx.URL
    before_length: bytes
    after_length: bytes
    timeouts: dict[str, float | None]


_DIFFERENT_REPLY: Final = (b"set-cookie", b"content-encoding")
"""Reply headers httpx's client acts on (keeps the cookie, decodes the body): such a reply is read
through an ``httpx.Response``, as the client reads it."""


def _plain_client(client: httpx.AsyncClient) -> bool:
    """True when httpx's client adds nothing to a request or reply that :class:`_Wire` leaves out: no
    auth, hooks, base URL, default query, redirects, or mounted transports (proxies from the
    environment are mounts). Its headers are in the wire; its cookie jar is checked per call."""
    hooks = client.event_hooks
    return (
        client.auth is None
        and not hooks["request"]
        and not hooks["response"]
        and not client.params
        and str(client.base_url) == ""
        and not client.follow_redirects
        and not getattr(client, "_mounts", True)
    )


def _at(body: Any, path: str) -> Any:
    """The value at a dotted path (``data.items.0.ref``), or ``_MISSING``."""
    value = body
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and _INDEX.fullmatch(part) and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _text(value: Any) -> str | None:
    """A provider scalar as text: strings as is, integers in decimal; anything else is absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value != "":
        return value
    return None


def _integer(value: Any) -> int | None:
    """An integer or a decimal string; never a float or a bool (amounts are exact)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = value.strip()
        if _INTEGER.fullmatch(digits):
            return int(digits)
    return None


class HttpAdapter:
    """A ``ProviderAdapter`` for one provider described by a ``ProviderFile``.

    ``secrets`` maps environment-variable names (as the file names them) to values; a name not in
    it is read from ``os.environ``. Missing secrets fail here, at construction, not at the first
    top-up. ``base_url`` overrides the file's (the embedded simulator picks its port at start).
    ``clock`` gives unix seconds for request timestamps.
    """

    def __init__(
        self,
        config: ProviderFile,
        client: httpx.AsyncClient,
        *,
        secrets: Mapping[str, str] | None = None,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._client = client
        self._base_url = (base_url or config.base_url).rstrip("/")
        self._clock = clock
        self._secrets = secrets or {}
        self._secret = self._resolve(config.signing.secret_env)
        self._callback_secret = self._resolve(config.callback.secret_env)
        self._merchant_id = config.signing.merchant_id or self._resolve(config.signing.merchant_id_env or "")
        self._breaker = breaker or CircuitBreaker(
            failure_threshold=config.breaker.failure_threshold, open_seconds=config.breaker.open_seconds
        )
        # operation path -> its parsed URL: httpx parses (and validates the host of) a ``str`` URL on every
        # request, a fifth of the client's CPU per call; an ``httpx.URL`` is used as it is
        self._urls: dict[str, httpx.URL] = {}
        # The raw path (``_send_raw``): when the client's transport takes a request as bytes (LeanTransport,
        # and the metrics' wrapper around it), a POST is written here once and sent as bytes, without
        # httpx's client layer and its request and response objects (most of an account check's CPU in the
        # gateway, docs/benchmarks.md). Same bytes on the wire, same replies, same errors (tests).
        transport = getattr(client, "_transport", None)
        self._raw: RawExchange | None = raw_exchange(transport) if _plain_client(client) else None
        self._wires: dict[str, _Wire] = {}

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        client: httpx.AsyncClient,
        *,
        secrets: Mapping[str, str] | None = None,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
        breaker: CircuitBreaker | None = None,
    ) -> Self:
        return cls(
            load_provider_file(path), client, secrets=secrets, base_url=base_url, clock=clock, breaker=breaker
        )

    def __repr__(self) -> str:
        return f"HttpAdapter({self.name!r}, {self._base_url!r})"

    def health(self) -> HealthSnapshot:
        return self._breaker.snapshot()

    # -- the protocol -------------------------------------------------------------------------

    async def validate(self, sku: str, account: str) -> Validation:
        reply = await self._exchange("validate", {"sku": sku, "account": account})
        if reply.body is None:
            raise ProviderUnreachable(f"validate: {reply.problem}", provider=self.name)
        code, meaning = self._code(reply.body)
        self._raise_config(code, meaning)
        if meaning == "ok" and self._is_2xx(reply):
            nickname = _at(reply.body, self.config.reply.nickname) if self.config.reply.nickname else None
            return Validation(ok=True, sku=sku, account=account, nickname=_text(nickname), provider_code=code)
        if meaning is not None and meaning in _REFUSALS:
            return Validation(
                ok=False, sku=sku, account=account, refusal=_REFUSALS[meaning], provider_code=code
            )
        raise ProviderUnreachable(
            f"validate: unrecognised reply (HTTP {reply.http_status}, code {code!r})",
            provider=self.name,
            code=code,
        )

    async def submit(self, request: TopupRequest) -> TopupResult:
        values = {
            "order_key": request.order_key,
            "sku": request.sku,
            "account": request.account,
            "callback_url": request.callback_url,
        }
        reply = await self._exchange("submit", values)  # circuit open: ProviderUnavailable, reroutable
        if reply.body is None:
            return self._unknown(request.order_key, f"submit: {reply.problem}")
        result = self._interpret(reply, order_key=request.order_key, request=request)
        # Refusals and reversals are raised with the class that tells the oracle what to do.
        return result.raise_for_status()

    async def query(self, order_key: str | None, provider_ref: str | None = None) -> TopupResult:
        if not order_key and not provider_ref:
            raise ValueError("query needs order_key or provider_ref")
        if order_key:
            values: dict[str, str | None] = {"order_key": order_key}
        elif "provider_ref" in self.config.operations.query.fields:
            values = {"provider_ref": provider_ref}
        else:
            raise ConfigError(
                "cannot query by provider reference: operations.query.fields has no provider_ref",
                provider=self.name,
            )
        try:
            reply = await self._exchange("query", values)
        except ProviderUnavailable as exc:
            return self._unknown(order_key, f"query: {exc}", provider_ref=provider_ref)
        if reply.body is None:
            return self._unknown(order_key, f"query: {reply.problem}", provider_ref=provider_ref)
        return self._interpret(reply, order_key=order_key, provider_ref=provider_ref)

    async def verify_callback(self, raw_body: bytes, headers: Mapping[str, str], now: float) -> TopupResult:
        callback = self.config.callback
        if callback.signature_in == "header":
            # Both header names are guaranteed by the provider-file validation for this mode.
            lowered = {key.lower(): value for key, value in headers.items()}
            signature = lowered.get(str(callback.signature_header).lower(), "").strip()
            stamp = lowered.get(str(callback.timestamp_header).lower(), "").strip()
            if not signature or not stamp:
                raise ForgedCallback("callback without signature or timestamp header", provider=self.name)
            timestamp = _integer(stamp)
            if timestamp is None:
                raise ForgedCallback(
                    f"callback timestamp {stamp[:32]!r} is not unix seconds", provider=self.name
                )
            expected = hmac_sha256_hex(
                self._callback_secret, callback_message(callback.message, stamp, raw_body)
            )
            if not hmac.compare_digest(expected, signature.lower()):
                raise ForgedCallback("callback signature does not match", provider=self.name)
            body = self._callback_body(raw_body)
        else:
            body = self._callback_body(raw_body)
            if not verify_params(
                callback.scheme, self._callback_secret, body, sign_field=callback.sign_field
            ):
                raise ForgedCallback("callback signature does not match", provider=self.name)
            timestamp = _integer(_at(body, callback.timestamp_field))
            if timestamp is None:
                raise ForgedCallback("callback without an integer timestamp field", provider=self.name)
        # Checked after the signature, so a forgery is always reported as one.
        if abs(now - timestamp) > callback.tolerance_seconds:
            raise StaleCallback(
                f"callback timestamp {timestamp} is {now - timestamp:+.0f} s from now "
                f"(tolerance {callback.tolerance_seconds} s)",
                provider=self.name,
            )
        return self._interpret(_Reply(body, 200), order_key=None, fields=callback.reply)

    async def balance(self) -> int:
        reply = await self._exchange("balance", {})
        if reply.body is None:
            raise ProviderUnreachable(f"balance: {reply.problem}", provider=self.name)
        code, meaning = self._code(reply.body)
        self._raise_config(code, meaning)
        amount = _integer(_at(reply.body, self.config.reply.balance or ""))
        if meaning == "ok" and self._is_2xx(reply) and amount is not None:
            return amount
        raise ProviderUnreachable(
            f"balance: unrecognised reply (HTTP {reply.http_status}, code {code!r})",
            provider=self.name,
            code=code,
        )

    # -- the wire ----------------------------------------------------------------------------

    def _resolve(self, variable: str) -> str:
        value = self._secrets.get(variable) or os.environ.get(variable)
        if not value:
            raise MissingSecret(variable, provider=self.name)
        return value

    def _signed(self, operation: Operation, values: Mapping[str, str | None]) -> dict[str, str | int | bool]:
        signing = self.config.signing
        payload: dict[str, str | int | bool] = dict(operation.constants)
        for ours, theirs in operation.fields.items():
            value = values.get(ours)
            if value is not None:
                payload[theirs] = value
        payload[signing.merchant_field] = self._merchant_id
        payload[signing.timestamp_field] = int(self._clock())
        payload[signing.sign_field] = sign_params(
            signing.scheme, self._secret, payload, sign_field=signing.sign_field
        )
        return payload

    async def _exchange(self, name: str, values: Mapping[str, str | None]) -> _Reply:
        """Send one signed request through the breaker; never raises for transport problems."""
        operation = self.config.operations.by_name(name)
        payload = self._signed(operation, values)
        if not self._breaker.acquire():
            snapshot = self._breaker.snapshot()
            raise ProviderUnavailable(
                f"circuit open after {snapshot.consecutive_failures} consecutive failures; "
                f"{name} was not sent, nothing was charged",
                provider=self.name,
            )
        healthy: bool | None = None
        try:
            reply = await self._send(operation, payload)
            healthy = reply.body is not None
            return reply
        finally:
            if healthy is None:
                self._breaker.release()  # cancelled: no verdict on the provider's health
            elif healthy:
                self._breaker.success()
            else:
                self._breaker.failure()

    async def _send(self, operation: Operation, payload: Mapping[str, str | int | bool]) -> _Reply:
        url = self._urls.get(operation.path)
        if url is None:  # the config's operations: a bounded set
            url = self._urls[operation.path] = httpx.URL(self._base_url + operation.path)
        client = self._client
        if (
            self._raw is not None
            and operation.method == "POST"
            and not client.cookies  # a kept cookie goes back to the provider: httpx's way
            and not client.is_closed  # httpx's way raises its error
        ):
            try:
                status, content = await self._send_raw(operation, url, payload)
            except httpx.RequestError as exc:
                return _Reply(None, None, f"{type(exc).__name__}: {exc}".rstrip(": "))
            return self._reply(status, content)
        timeout = self._timeout(operation)
        as_text = {key: render_value(key, value) for key, value in payload.items()}
        try:
            if operation.method == "GET":
                response = await client.get(url, params=as_text, timeout=timeout)
            elif self.config.body_encoding == "form":
                response = await client.post(url, data=as_text, timeout=timeout)
            else:
                response = await client.post(url, json=payload, timeout=timeout)
        except httpx.RequestError as exc:
            return _Reply(None, None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        return self._reply(response.status_code, response.content)

    def _timeout(self, operation: Operation) -> httpx.Timeout:
        timeouts = self.config.timeouts
        return httpx.Timeout(
            connect=timeouts.connect,
            read=operation.timeout_seconds or timeouts.read,
            write=timeouts.write,
            pool=timeouts.pool,
        )

    def _body(self, payload: Mapping[str, str | int | bool]) -> bytes:
        """The body httpx's ``post(json=)`` or ``post(data=)`` encodes (``httpx._content``)."""
        if self.config.body_encoding == "form":
            as_text = [(key, render_value(key, value)) for key, value in payload.items()]
            return urlencode(as_text, doseq=True).encode("utf-8")
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def _wire(self, operation: Operation, url: httpx.URL) -> _Wire:
        wire = self._wires.get(operation.path)
        if wire is None:
            # httpx's own request for a placeholder body: its headers as the client would send them
            placeholder: dict[str, Any] = (
                {"data": {"x": "y"}} if self.config.body_encoding == "form" else {"json": {}}
            )
            timeout = self._timeout(operation)
            request = self._client.build_request(operation.method, url, timeout=timeout, **placeholder)
            lines, _ = request_head(request)
            (at,) = [i for i, line in enumerate(lines) if line.lower().startswith(b"content-length:")]
            wire = self._wires[operation.path] = _Wire(
                url=url,
                before_length=b"\r\n".join(lines[:at]) + b"\r\n",
                after_length=b"".join(b"\r\n" + line for line in lines[at + 1 :]) + b"\r\n\r\n",
                timeouts=timeout.as_dict(),
            )
        return wire

    async def _send_raw(
        self, operation: Operation, url: httpx.URL, payload: Mapping[str, str | int | bool]
    ) -> tuple[int, bytes]:
        """``_send``'s exchange as bytes; raises what httpx's client raises (``httpx.RequestError``)."""
        assert self._raw is not None
        wire = self._wire(operation, url)
        body = self._body(payload)
        message = wire.before_length + b"Content-Length: %d" % len(body) + wire.after_length + body
        reply = await self._raw(url.scheme, url.host, url.port, message, wire.timeouts)
        if any(name.lower() in _DIFFERENT_REPLY for name, _ in reply.headers):
            # as httpx's client reads it: the body decoded, the cookie kept for the next request
            response = httpx.Response(
                reply.status,
                headers=reply.headers,
                content=reply.body,
                request=httpx.Request(operation.method, url),
            )
            self._client.cookies.extract_cookies(response)
            return response.status_code, response.content
        return reply.status, reply.body

    @staticmethod
    def _reply(status: int, content: bytes) -> _Reply:
        if status >= 500:
            return _Reply(None, status, f"HTTP {status}")
        try:
            body = loads_bounded(content)
        except ValueError:
            return _Reply(None, status, f"HTTP {status} reply is not JSON")
        if not isinstance(body, dict):
            return _Reply(None, status, f"HTTP {status} reply is not a JSON object")
        return _Reply(body, status)

    # -- replies -> outcomes -----------------------------------------------------------------

    @staticmethod
    def _is_2xx(reply: _Reply) -> bool:
        return reply.http_status is not None and 200 <= reply.http_status < 300

    def _code(
        self, body: Mapping[str, Any], fields: ReplyFields | None = None
    ) -> tuple[str | None, CodeMeaning | None]:
        path = (fields or self.config.reply).code
        if path is None:
            return None, "ok"  # the provider has no reply codes; its statuses say everything
        code = _text(_at(body, path))
        return code, (self.config.codes.get(code) if code is not None else None)

    def _raise_config(self, code: str | None, meaning: CodeMeaning | None) -> None:
        if meaning == "bad_signature":
            raise AuthenticationFailed(
                "the provider rejected our signature, merchant id or timestamp (check secret and clock)",
                provider=self.name,
                code=code,
            )
        if meaning == "bad_request":
            raise RequestRejected("the provider says our request is malformed", provider=self.name, code=code)
        if meaning == "idempotency_conflict":
            raise IdempotencyConflict(
                "the provider holds a different order under our key", provider=self.name, code=code
            )

    def _unknown(
        self,
        order_key: str | None,
        detail: str,
        *,
        provider_ref: str | None = None,
        code: str | None = None,
        raw: Mapping[str, Any] | None = None,
        unseen: bool = False,
    ) -> TopupResult:
        return TopupResult(
            TopupStatus.UNKNOWN,
            self.name,
            order_key,
            provider_ref=provider_ref,
            provider_code=code,
            detail=detail,
            raw=raw,
            unseen=unseen,
        )

    def _interpret(
        self,
        reply: _Reply,
        *,
        order_key: str | None,
        provider_ref: str | None = None,
        request: TopupRequest | None = None,
        fields: ReplyFields | None = None,
    ) -> TopupResult:
        """Normalise a topup-shaped reply (submit, query, callback). ``request`` is set for submit."""
        assert reply.body is not None
        body = reply.body
        fields = fields or self.config.reply
        code, meaning = self._code(body, fields)
        self._raise_config(code, meaning)
        reply_key = _text(_at(body, fields.order_key))
        reply_ref = _text(_at(body, fields.provider_ref))
        key = order_key or reply_key
        ref = provider_ref or reply_ref

        def unknown(detail: str) -> TopupResult:
            return self._unknown(key, detail, provider_ref=ref, code=code, raw=body)

        if meaning is None:
            return unknown(f"unrecognised reply (HTTP {reply.http_status}, code {code!r})")
        if meaning == "not_found":
            # Not proof of anything: the request may still be in flight. Ask again, or resubmit
            # under the same key once the caller is sure the first attempt is dead.
            return self._unknown(
                key,
                "the provider does not know this order (yet)",
                provider_ref=ref,
                code=code,
                raw=body,
                unseen=True,
            )
        if order_key and reply_key and reply_key != order_key:
            return unknown(f"the reply is about order {reply_key!r}, not {order_key!r}")
        if provider_ref and reply_ref and reply_ref != provider_ref:
            return unknown(f"the reply is about provider reference {reply_ref!r}, not {provider_ref!r}")
        if request is not None:
            for name, sent in (("sku", request.sku), ("account", request.account)):
                echoed = _text(_at(body, getattr(fields, name)))
                if echoed is not None and echoed != sent:
                    return unknown(f"the reply's {name} {echoed!r} is not the {name} we sent")

        if meaning in _REFUSALS:
            # A refusal to our own submit is about that submit; elsewhere it must name the order.
            if request is None and reply_key is None:
                return unknown(f"refusal code {code!r} without the order it is about")
            return self._failed(key, ref, _REFUSALS[meaning], code, body, fields)
        if not self._is_2xx(reply):
            return unknown(f"HTTP {reply.http_status} with success code {code!r}")

        raw_status = _text(_at(body, fields.status))
        status = _STATUSES.get(self.config.statuses.get(raw_status, "")) if raw_status is not None else None
        if status is None:
            return unknown(f"unrecognised status {raw_status!r}")
        if status is TopupStatus.SUCCEEDED:
            return self._succeeded(key, ref, code, body, fields) or unknown(
                "a success reply without every receipt field (provider_ref, order, sku, account, "
                "integer credited and completed_at)"
            )
        if status is TopupStatus.FAILED_NOT_CHARGED:
            reason = _text(_at(body, fields.reason)) if fields.reason else None
            refusal = _REFUSALS.get(self.config.codes.get(reason, "")) if reason is not None else None
            return self._failed(key, ref, refusal or Refusal.REJECTED, reason or code, body, fields)
        return TopupResult(status, self.name, key, provider_ref=ref, provider_code=code, raw=body)

    def _failed(
        self,
        key: str | None,
        ref: str | None,
        refusal: Refusal,
        code: str | None,
        body: Mapping[str, Any],
        fields: ReplyFields,
    ) -> TopupResult:
        message = _text(_at(body, fields.message)) if fields.message else None
        return TopupResult(
            TopupStatus.FAILED_NOT_CHARGED,
            self.name,
            key,
            provider_ref=ref,
            refusal=refusal,
            provider_code=code,
            detail=message or "",
            raw=body,
        )

    def _succeeded(
        self, key: str | None, ref: str | None, code: str | None, body: Mapping[str, Any], fields: ReplyFields
    ) -> TopupResult | None:
        sku = _text(_at(body, fields.sku))
        account = _text(_at(body, fields.account))
        credited = _integer(_at(body, fields.credited))
        completed_at = _integer(_at(body, fields.completed_at))
        if (
            key is None
            or ref is None
            or sku is None
            or account is None
            or credited is None
            or completed_at is None
        ):
            return None
        receipt = Receipt(
            provider=self.name,
            provider_ref=ref,
            order_id=key,
            sku=sku,
            credited=credited,
            account=account,
            completed_at=completed_at,
        )
        return TopupResult(
            TopupStatus.SUCCEEDED,
            self.name,
            key,
            provider_ref=ref,
            receipt=receipt,
            provider_code=code,
            raw=body,
        )

    def _callback_body(self, raw_body: bytes) -> Mapping[str, Any]:
        try:
            body = loads_bounded(raw_body)
        except ValueError:
            raise ForgedCallback("callback body is not JSON", provider=self.name) from None
        if not isinstance(body, dict):
            raise ForgedCallback("callback body is not a JSON object", provider=self.name)
        return body


if TYPE_CHECKING:
    # mypy proves the class satisfies the protocol (the registry re-checks at load time).
    def _conforms(adapter: HttpAdapter) -> ProviderAdapter:
        return adapter

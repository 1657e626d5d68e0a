"""The declarative provider file that configures ``adapters.http.HttpAdapter``.

A provider file is TOML (``adapters/providers/*.toml``); ``load_provider_file`` parses it into
``ProviderFile``. Every mistake is a ``ProviderFileError`` whose ``key`` is the dotted path of the bad
key (``operations.submit.method``), and unknown keys are mistakes, so a typo cannot silently switch
a feature off. Secrets never appear in the file: it names environment variables (``secret_env``)
and the adapter resolves them, from a mapping the caller passes or from the environment.

Sections (``adapters/providers/simulator.toml`` is a complete example):

``name``, ``base_url``, ``body_encoding``
    Provider name (goes into receipts), root URL, ``json`` or ``form`` request bodies.
``[signing]``
    ``scheme`` (``hmac-sha256`` | ``md5-sorted-params``), ``secret_env``, ``merchant_id`` or
    ``merchant_id_env``, and the field names for sign, timestamp and merchant id.
``[operations.validate|submit|query|balance]``
    ``method``, ``path``, ``fields`` (our name -> provider field), ``constants``, ``timeout_seconds``.
``[reply]``
    Where each normalised value is in a reply: dotted paths such as ``data.order.ref``.
``[statuses]``
    Provider status -> ``succeeded`` | ``processing`` | ``failed_not_charged`` | ``reversed``.
``[codes]``
    Provider reply code -> meaning (``CodeMeaning``); the meaning fixes the error class.
``[callback]``
    How callbacks are signed: in a header over ``message`` (``hmac-sha256``), or as a sign field in
    the body with a parameter scheme; ``tolerance_seconds``; ``[callback.reply]`` when callback
    bodies are shaped differently from replies.
``[timeouts]``, ``[breaker]``
    httpx timeouts in seconds; circuit-breaker threshold and open interval.
``[account]``
    The game-account format of the provider's products: ``pattern`` (a regular expression the whole
    account must match; ``\\d`` and ``\\w`` mean ASCII only), ``min_length``, ``max_length``,
    ``description`` (shown to a buyer whose account does not fit), and ``[account.skus.<sku>]`` tables
    overriding any of these for one SKU. The gateway refuses a quote for an account that does not fit
    every provider the SKU routes to. ``read_account_format`` reads this table from a provider file
    of any adapter kind.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from adapters._exceptions import ProviderFileError

__all__ = [
    "ACCOUNT_MAX_LENGTH",
    "BUNDLED",
    "OPERATION_FIELDS",
    "AccountFormat",
    "AccountRule",
    "Breaker",
    "Callback",
    "CodeMeaning",
    "Operation",
    "Operations",
    "ProviderFile",
    "ReplyFields",
    "Signing",
    "StatusMeaning",
    "Timeouts",
    "bundled_provider_file",
    "load_provider_file",
    "parse_provider_file",
    "read_account_format",
]

CodeMeaning = Literal[
    "ok",
    "not_found",
    "invalid_account",
    "unknown_sku",
    "out_of_stock",
    "insufficient_balance",
    "rejected",
    "bad_signature",
    "bad_request",
    "idempotency_conflict",
]
"""What a provider's reply code means. Refusals (``invalid_account`` ... ``rejected``) are
``FAILED_NOT_CHARGED``; ``invalid_account`` is final (refund), the others may reroute.
``bad_signature`` raises ``AuthenticationFailed``, ``bad_request`` ``RequestRejected`` and
``idempotency_conflict`` ``IdempotencyConflict``.
A code not in the table is treated like no reply: ``UNKNOWN`` for submit and query."""

StatusMeaning = Literal["succeeded", "processing", "failed_not_charged", "reversed"]

OurField = Literal["order_key", "sku", "account", "callback_url", "provider_ref"]

OPERATION_FIELDS: Mapping[str, frozenset[str]] = {
    "validate": frozenset({"sku", "account"}),
    "submit": frozenset({"order_key", "sku", "account", "callback_url"}),
    "query": frozenset({"order_key", "provider_ref"}),
    "balance": frozenset(),
}
"""Which of our values each operation can send; ``fields`` must map the required ones."""

_REQUIRED_FIELDS: Mapping[str, frozenset[str]] = {
    "validate": frozenset({"sku", "account"}),
    "submit": frozenset({"order_key", "sku", "account"}),
    "query": frozenset({"order_key"}),
    "balance": frozenset(),
}

Name = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
DottedPath = Annotated[str, Field(min_length=1, pattern=r"^[^.\s]+(\.[^.\s]+)*$")]
EnvVar = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Constant = str | int | bool


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Signing(_Section):
    scheme: Literal["hmac-sha256", "md5-sorted-params"]
    secret_env: EnvVar
    merchant_id: Name | None = None
    merchant_id_env: EnvVar | None = None
    sign_field: Name = "sign"
    timestamp_field: Name = "timestamp"
    merchant_field: Name = "merchant_id"

    @model_validator(mode="after")
    def _one_merchant_id(self) -> Self:
        if (self.merchant_id is None) == (self.merchant_id_env is None):
            raise ValueError("give exactly one of merchant_id and merchant_id_env")
        return self


class Operation(_Section):
    path: Annotated[str, Field(pattern=r"^/")]
    method: Literal["GET", "POST"] = "POST"
    fields: dict[OurField, Name] = {}
    """Our value name -> the provider's field name."""
    constants: dict[Name, Constant] = {}
    """Fields sent (and signed) with a fixed value, e.g. ``version = "2"``."""
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    """Overrides ``timeouts.read`` for this operation."""


class Operations(_Section):
    # `validate` shadows a (deprecated) BaseModel classmethod, hence the alias.
    validate_: Operation = Field(alias="validate")
    submit: Operation
    query: Operation
    balance: Operation

    def by_name(self, name: str) -> Operation:
        operations = {"validate": self.validate_, "submit": self.submit, "query": self.query}
        return operations.get(name, self.balance)

    @model_validator(mode="after")
    def _fields_fit_operations(self) -> Self:
        for name in OPERATION_FIELDS:
            operation = self.by_name(name)
            extra = set(operation.fields) - OPERATION_FIELDS[name]
            if extra:
                raise ValueError(
                    f"{name}.fields: {', '.join(sorted(extra))} cannot be sent by {name} "
                    f"(allowed: {', '.join(sorted(OPERATION_FIELDS[name])) or 'none'})"
                )
            missing = _REQUIRED_FIELDS[name] - set(operation.fields)
            if missing:
                raise ValueError(f"{name}.fields: must map {', '.join(sorted(missing))}")
        return self


class ReplyFields(_Section):
    """Dotted paths into the provider's reply for each normalised value."""

    code: DottedPath | None
    """The reply code; ``None`` for a provider whose 2xx replies carry no code (read as ``ok``)."""
    status: DottedPath
    order_key: DottedPath
    provider_ref: DottedPath
    sku: DottedPath
    account: DottedPath
    credited: DottedPath
    completed_at: DottedPath
    balance: DottedPath | None = None
    """Required in ``[reply]`` (the balance operation reads it); unused in ``[callback.reply]``."""
    nickname: DottedPath | None = None
    reason: DottedPath | None = None
    """A failure-reason code for ``failed_not_charged`` statuses, looked up in ``[codes]``."""
    message: DottedPath | None = None
    """Human-readable text for logs."""


class Callback(_Section):
    scheme: Literal["hmac-sha256", "md5-sorted-params"]
    secret_env: EnvVar
    signature_in: Literal["header", "body"] = "header"
    signature_header: Name | None = None
    timestamp_header: Name | None = None
    message: str = "{timestamp}.{body}"
    """What the header signature covers (``signature_in = "header"``)."""
    sign_field: Name = "sign"
    timestamp_field: Name = "timestamp"
    """Where body-signed callbacks carry their signature and timestamp (``signature_in = "body"``)."""
    tolerance_seconds: Annotated[int, Field(gt=0, le=3600)] = 300
    reply: ReplyFields | None = None
    """Where values are in a callback body, when that differs from ``[reply]`` (flat form posts)."""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.signature_in == "header":
            if self.scheme != "hmac-sha256":
                raise ValueError("scheme: header signatures support hmac-sha256 only")
            if not self.signature_header or not self.timestamp_header:
                raise ValueError("signature_in = 'header' needs signature_header and timestamp_header")
            if "{body}" not in self.message or "{timestamp}" not in self.message:
                raise ValueError("message: must contain {timestamp} and {body}")
        return self


class Timeouts(_Section):
    connect: Annotated[float, Field(gt=0)] = 3.0
    read: Annotated[float, Field(gt=0)] = 15.0
    write: Annotated[float, Field(gt=0)] = 5.0
    pool: Annotated[float, Field(gt=0)] = 3.0


class Breaker(_Section):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    open_seconds: Annotated[float, Field(gt=0)] = 30.0


ACCOUNT_MAX_LENGTH: Final = 64
"""The longest game account the gateway accepts, whatever a provider file allows."""


class AccountRule(_Section):
    """The shape of a game account; unset values are inherited (an SKU's rule from the file's)."""

    pattern: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    min_length: Annotated[int, Field(ge=1, le=ACCOUNT_MAX_LENGTH)] | None = None
    max_length: Annotated[int, Field(ge=1, le=ACCOUNT_MAX_LENGTH)] | None = None
    description: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """What a valid account looks like, in the buyer's words (``"5 to 12 digits"``)."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.ASCII)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length: {self.min_length} is more than max_length {self.max_length}")
        return self

    def merged(self, override: AccountRule) -> AccountRule:
        """This rule with ``override``'s set values on top."""
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def problem(self, account: str) -> str | None:
        """Why ``account`` does not fit this rule, or None when it does."""
        if self.min_length is not None and len(account) < self.min_length:
            return f"is shorter than {self.min_length} characters"
        if self.max_length is not None and len(account) > self.max_length:
            return f"is longer than {self.max_length} characters"
        # re.ASCII: `\d` in a provider's pattern must not match full-width or Arabic-Indic digits.
        if self.pattern is not None and re.fullmatch(self.pattern, account, re.ASCII) is None:
            return "does not have the expected format"
        return None


class AccountFormat(AccountRule):
    """``[account]``: the file's rule, and per-SKU overrides."""

    skus: dict[Name, AccountRule] = {}

    @model_validator(mode="after")
    def _overrides_bounded(self) -> Self:
        for sku in self.skus:
            rule = self.for_sku(sku)
            low, high = rule.min_length, rule.max_length
            if low is not None and high is not None and low > high:
                raise ValueError(f"skus.{sku}: min_length {low} is more than max_length {high}")
        return self

    def for_sku(self, sku: str) -> AccountRule:
        """The rule an account for ``sku`` must fit."""
        base = AccountRule.model_validate(self.model_dump(exclude={"skus"}))
        override = self.skus.get(sku)
        return base if override is None else base.merged(override)


class ProviderFile(_Section):
    adapter: Literal["http"] = "http"
    """The adapter kind (``adapters.registry``); files for other adapters are not parsed here."""
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    body_encoding: Literal["json", "form"] = "json"
    signing: Signing
    operations: Operations
    reply: ReplyFields
    statuses: dict[Name, StatusMeaning]
    codes: dict[Name, CodeMeaning]
    callback: Callback
    timeouts: Timeouts = Timeouts()
    breaker: Breaker = Breaker()
    account: AccountFormat | None = None
    """None: the file declares no format and only the gateway's own account checks apply."""

    @model_validator(mode="after")
    def _tables_usable(self) -> Self:
        if self.reply.balance is None:
            raise ValueError("reply.balance: required, the balance operation reads it")
        if "succeeded" not in self.statuses.values():
            raise ValueError("statuses: no provider status maps to 'succeeded'")
        if "ok" not in self.codes.values():
            raise ValueError("codes: no provider code maps to 'ok'")
        return self


_KEYED_MESSAGE: Final = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.DOTALL)

BUNDLED: Final = Path(__file__).with_name("providers")
"""Provider files that ship with Cardless (``adapters/providers/<name>.toml``)."""


def bundled_provider_file(name: str) -> Path:
    """The path of a shipped provider file, e.g. ``bundled_provider_file("simulator")``."""
    path = BUNDLED / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BUNDLED.glob("*.toml"))) or "none"
        raise ProviderFileError(f"no bundled provider file {name!r} (bundled: {known})", path=str(path))
    return path


def _reject_literal_secrets(data: Any, path: str = "") -> None:
    """Secrets belong in the environment; a key that looks like one is refused with its path."""
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        lowered = str(key).lower()
        looks_secret = "secret" in lowered or lowered in {"key", "api_key", "password"}
        if looks_secret and not lowered.endswith("_env"):
            raise ProviderFileError(
                "secrets must not be written in a provider file; name an environment variable "
                "with secret_env instead",
                key=dotted,
            )
        _reject_literal_secrets(value, dotted)


def parse_provider_file(data: Mapping[str, Any], *, source: str = "") -> ProviderFile:
    """Validate already-parsed TOML; ``source`` names the file in error messages."""
    try:
        _reject_literal_secrets(data)
    except ProviderFileError as exc:
        raise ProviderFileError(str(exc), key=exc.key, path=source) from None
    try:
        return ProviderFile.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_url=False)]
        described = "; ".join(f"{key or '<top level>'}: {message}" for key, message in problems)
        raise ProviderFileError(described, key=problems[0][0] if problems else "", path=source) from None


def _problem(error: ErrorDetails) -> tuple[str, str]:
    """(dotted key, message). A model-level check reports at its section and starts its message with
    the sub-key (``"validate.fields: ..."``); that prefix is moved into the key."""
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    if error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", message))
        match = _KEYED_MESSAGE.match(message)
        if match:
            key = f"{key}.{match[1]}" if key else match[1]
            message = match[2]
    return key, message


def load_provider_file(path: str | Path) -> ProviderFile:
    """Read and validate a provider file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProviderFileError(f"cannot read: {exc.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProviderFileError(f"not valid TOML: {exc}", path=str(path)) from None
    return parse_provider_file(data, source=str(path))


def read_account_format(path: str | Path) -> tuple[str, AccountFormat | None]:
    """The provider name and ``[account]`` table of a provider file of any adapter kind.

    Only ``name`` and ``[account]`` are checked here; ``load_provider_file`` (or the adapter's own
    loader) checks the rest.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProviderFileError(f"cannot read: {exc.strerror}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProviderFileError(f"not valid TOML: {exc}", path=str(path)) from None
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ProviderFileError("must name the provider", key="name", path=str(path))
    table = data.get("account")
    if table is None:
        return name, None
    try:
        return name, AccountFormat.model_validate(table)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_url=False)]
        keyed = [(f"account.{key}" if key else "account", message) for key, message in problems]
        described = "; ".join(f"{key}: {message}" for key, message in keyed)
        raise ProviderFileError(described, key=keyed[0][0], path=str(path)) from None

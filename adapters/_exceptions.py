"""Errors raised by the ``adapters`` package.

Every class says what the oracle does next; the class, never the message, is the contract::

    AdapterError
    ├── TransientError            nothing is known to have changed: ask again later, same key
    │   └── ProviderUnreachable   validate/balance got a timeout, reset, 5xx or unparseable reply
    ├── RerouteError              provably not charged: the order may go to the next provider for the SKU
    │   ├── ProviderUnavailable   circuit open: the provider was not called at all
    │   └── ProviderRefused       the provider refused (out of stock, unknown SKU, our balance too low)
    ├── RefundError               final: no provider will fulfil this order; refund the buyer
    │   ├── AccountRejected       the game account does not exist or cannot receive top-ups
    │   └── TopupReversed         the provider credited, then reversed the top-up
    ├── CallbackRejected          a callback is not trustworthy: ignore it and answer 4xx
    │   ├── ForgedCallback        missing or wrong signature, or a body that is not a JSON object
    │   └── StaleCallback         timestamp outside the tolerance window (a replay or a bad clock)
    └── ConfigError               an operator must fix something; the provider changed nothing
        ├── ProviderFileError     the provider file is invalid (``key`` names the bad key)
        ├── MissingSecret         a secret's environment variable is not set
        ├── AuthenticationFailed  the provider rejected our signature, merchant id or clock
        ├── RequestRejected       the provider says our request is malformed
        ├── IdempotencyConflict   the provider holds a different order under our key
        └── RegistryError         an adapter cannot be registered or loaded
            ├── DuplicateAdapter  two registrations claim one name
            ├── AdapterNotFound   no adapter of that name
            └── IncompleteAdapter the loaded class does not implement the protocol

What is *not* an error: a timeout, connection reset, 5xx or unparseable reply to ``submit`` or
``query`` is the result ``TopupStatus.UNKNOWN``. The top-up may or may not have happened, so it is
never reported as a failure; the oracle queries by our key until it resolves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters._base import TopupResult

__all__ = [
    "AccountRejected",
    "AdapterError",
    "AdapterNotFound",
    "AuthenticationFailed",
    "CallbackRejected",
    "ConfigError",
    "DuplicateAdapter",
    "ForgedCallback",
    "IdempotencyConflict",
    "IncompleteAdapter",
    "MissingSecret",
    "ProviderFileError",
    "ProviderRefused",
    "ProviderUnavailable",
    "ProviderUnreachable",
    "RefundError",
    "RegistryError",
    "RequestRejected",
    "RerouteError",
    "StaleCallback",
    "TopupReversed",
    "TransientError",
]


class AdapterError(Exception):
    """Root of every error this package raises.

    ``provider`` names the provider (empty when not known yet, e.g. a provider file that does not
    parse); ``code`` is the provider's own code when it gave one; ``result`` is the normalised
    outcome when there is one (a refusal carries a ``FAILED_NOT_CHARGED`` result).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | None = None,
        result: TopupResult | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}" if provider else message)
        self.provider = provider
        self.code = code
        self.result = result


class TransientError(AdapterError):
    """Nothing is known to have changed; try again later with the same key."""


# The names below are public API that callers catch; they read as outcomes, hence no Error suffix.
class ProviderUnreachable(TransientError):  # noqa: N818
    """A timeout, connection reset, 5xx or unparseable reply to a call that changes nothing."""


class RerouteError(AdapterError):
    """The provider provably did not charge: the order may be sent to the next provider for the SKU."""


class ProviderUnavailable(RerouteError):  # noqa: N818
    """The provider's circuit is open, so it was not called."""


class ProviderRefused(RerouteError):  # noqa: N818
    """The provider refused the top-up and charged nothing (out of stock, unknown SKU, low balance)."""


class RefundError(AdapterError):
    """Final: no provider will fulfil the order; refund the buyer."""


class AccountRejected(RefundError):  # noqa: N818
    """The game account does not exist or cannot be credited; another provider would refuse it too."""


class TopupReversed(RefundError):  # noqa: N818
    """The provider credited the account and then reversed it."""


class CallbackRejected(AdapterError):  # noqa: N818
    """A callback cannot be trusted; change nothing and answer the sender with a 4xx."""


class ForgedCallback(CallbackRejected):
    """The signature is missing or wrong, or the body is not a JSON object.

    An authentic body whose content cannot be read is not forged: it verifies to ``UNKNOWN``.
    """


class StaleCallback(CallbackRejected):
    """The callback's timestamp is outside the tolerance window."""


class ConfigError(AdapterError):
    """Something an operator must fix. The provider changed nothing."""


class ProviderFileError(ConfigError):
    """The provider file is invalid. ``key`` is the dotted path of the bad key, ``path`` the file."""

    def __init__(self, message: str, *, key: str = "", path: str = "") -> None:
        where = f"{path}: " if path else ""
        at = f"{key}: " if key else ""
        super().__init__(f"{where}{at}{message}")
        self.key = key
        self.path = path


class MissingSecret(ConfigError):  # noqa: N818
    """A secret named by the provider file is neither in the caller's mapping nor the environment."""

    def __init__(self, variable: str, *, provider: str = "") -> None:
        super().__init__(f"secret {variable} is not set", provider=provider)
        self.variable = variable


class AuthenticationFailed(ConfigError):  # noqa: N818
    """The provider rejected our signature, merchant id or timestamp (wrong secret or clock skew)."""


class RequestRejected(ConfigError):  # noqa: N818
    """The provider says our request is malformed: a provider-file mapping is wrong, or a value (an
    over-long account, say) is outside what the provider accepts."""


class IdempotencyConflict(ConfigError):  # noqa: N818
    """The provider already holds a different order under our key.

    A configuration error because its likely cause is two deployments sharing one merchant account
    and one order-id space. Never reroute or refund on it automatically: the provider may have
    credited the other order.
    """


class RegistryError(ConfigError):
    """An adapter cannot be registered or loaded."""


class DuplicateAdapter(RegistryError):  # noqa: N818
    """Two registrations claim the same adapter name."""


class AdapterNotFound(RegistryError):  # noqa: N818
    """No adapter is registered under that name."""


class IncompleteAdapter(RegistryError):  # noqa: N818
    """The loaded object does not implement ``ProviderAdapter`` (missing or non-async methods)."""

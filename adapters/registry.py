"""Adapter classes by name, loaded lazily (the SQLAlchemy ``PluginLoader`` pattern).

A registration is a name and an import path ``"package.module:Class"``; nothing is imported until
the adapter is first loaded. Third-party packages add adapters through the entry-point group
``cardless.adapters``::

    [project.entry-points."cardless.adapters"]
    acme = "acme_cardless.adapter:AcmeAdapter"

A provider file names its adapter kind with a top-level ``adapter = "<name>"`` (default ``http``);
``AdapterRegistry.from_file`` loads that class and builds it with its classmethod
``from_file(path, client, *, secrets, base_url)``, the construction contract every adapter class
keeps (``HttpAdapter.from_file`` is the model). So a third-party adapter is an installed package
plus a provider file, with no code change in Cardless.

Rules:

- A name belongs to one import path. A second registration with another path raises
  ``DuplicateAdapter`` naming both sources; registering the identical path again is a no-op.
- Loading checks the class against ``ProviderAdapter``: every protocol method must exist and be a
  coroutine function, or ``IncompleteAdapter`` names the missing and the non-async ones. A broken
  plugin fails when it is loaded, not in the middle of a top-up.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from adapters._base import PROTOCOL_METHODS, SYNC_METHODS, ProviderAdapter
from adapters._exceptions import (
    AdapterNotFound,
    DuplicateAdapter,
    IncompleteAdapter,
    ProviderFileError,
    RegistryError,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_KIND",
    "ENTRY_POINT_GROUP",
    "AdapterRegistry",
    "Registration",
    "adapter_kind",
    "protocol_gaps",
    "registry",
]

ENTRY_POINT_GROUP: Final = "cardless.adapters"
DEFAULT_KIND: Final = "http"
"""The adapter kind of a provider file that does not name one."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    name: str
    target: str
    """``"package.module:Class"``."""
    source: str
    """Who registered it, for error messages: ``built-in``, ``entry point in acme-cardless 1.2``."""


def protocol_gaps(cls: type) -> tuple[list[str], list[str], list[str]]:
    """The protocol methods ``cls`` lacks, those it defines without ``async``, and the synchronous
    ones (``SYNC_METHODS``: ``health``) it defines as coroutines.

    A class that subclasses ``ProviderAdapter`` inherits its stub methods; those count as missing.
    """
    missing: list[str] = []
    not_async: list[str] = []
    not_sync: list[str] = []
    for method in PROTOCOL_METHODS:
        attr = getattr(cls, method, None)
        if attr is None or not callable(attr) or attr is getattr(ProviderAdapter, method):
            missing.append(method)
        elif method in SYNC_METHODS:
            if inspect.iscoroutinefunction(attr):
                not_sync.append(method)
        elif not inspect.iscoroutinefunction(attr):
            not_async.append(method)
    return missing, not_async, not_sync


class AdapterRegistry:
    """Names to adapter classes. ``group=None`` switches entry-point discovery off (tests)."""

    def __init__(self, group: str | None = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self._registrations: dict[str, Registration] = {}
        self._loaded: dict[str, type[ProviderAdapter]] = {}
        self._discovered = group is None

    def register(self, name: str, target: str, *, source: str = "register()") -> None:
        """Register ``target`` (``"module:Class"``) under ``name`` without importing it."""
        if not _NAME.match(name):
            raise RegistryError(f"adapter name {name!r} must be lowercase letters, digits, '_', '.', '-'")
        if not _TARGET.match(target):
            raise RegistryError(f"adapter {name!r}: import path {target!r} is not 'package.module:Class'")
        existing = self._registrations.get(name)
        if existing is not None:
            if existing.target == target:
                return
            raise DuplicateAdapter(
                f"adapter name {name!r} is claimed twice: {existing.target} ({existing.source}) "
                f"and {target} ({source}); uninstall one or register under another name"
            )
        self._registrations[name] = Registration(name, target, source)

    def discover(self) -> None:
        """Register the adapters installed distributions declare in the entry-point group."""
        if self._discovered:
            return
        self._discovered = True
        assert self.group is not None
        for entry_point in importlib.metadata.entry_points(group=self.group):
            dist = entry_point.dist
            origin = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
            self.register(entry_point.name, entry_point.value, source=f"entry point in {origin}")

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._registrations)

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._registrations

    def registration(self, name: str) -> Registration:
        self.discover()
        try:
            return self._registrations[name]
        except KeyError:
            known = ", ".join(sorted(self._registrations)) or "none"
            raise AdapterNotFound(f"no adapter named {name!r} (registered: {known})") from None

    def load(self, name: str) -> type[ProviderAdapter]:
        """Import the adapter class registered as ``name`` and check it implements the protocol."""
        if name in self._loaded:
            return self._loaded[name]
        registration = self.registration(name)
        cls = self._import(registration)
        missing, not_async, not_sync = protocol_gaps(cls)
        if missing or not_async or not_sync:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if not_async:
                problems.append(f"not async: {', '.join(not_async)}")
            if not_sync:
                problems.append(f"must not be async: {', '.join(not_sync)}")
            raise IncompleteAdapter(
                f"adapter {name!r} ({registration.target}, {registration.source}) does not implement "
                f"ProviderAdapter: {'; '.join(problems)}"
            )
        adapter = cast("type[ProviderAdapter]", cls)
        self._loaded[name] = adapter
        return adapter

    def from_file(
        self,
        path: str | Path,
        client: httpx.AsyncClient,
        *,
        secrets: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> ProviderAdapter:
        """Build the adapter a provider file asks for (its ``adapter`` key, default ``http``)."""
        kind = adapter_kind(path)
        cls: Any = self.load(kind)
        build = getattr(cls, "from_file", None)
        if not callable(build):
            registration = self.registration(kind)
            raise IncompleteAdapter(
                f"adapter {kind!r} ({registration.target}, {registration.source}) has no "
                f"from_file(path, client, *, secrets, base_url) classmethod; {path} cannot be loaded"
            )
        adapter = build(path, client, secrets=secrets, base_url=base_url)
        return cast("ProviderAdapter", adapter)

    @staticmethod
    def _import(registration: Registration) -> type:
        module_name, _, attr_path = registration.target.partition(":")
        where = f"adapter {registration.name!r} ({registration.target}, {registration.source})"
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(f"{where}: cannot import {module_name}: {exc}") from exc
        for part in attr_path.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise RegistryError(f"{where}: {module_name} has no attribute {attr_path}") from None
        if not inspect.isclass(obj):
            raise IncompleteAdapter(f"{where}: is a {type(obj).__name__}, not a class")
        return obj


def adapter_kind(path: str | Path) -> str:
    """The adapter a provider file names (top-level ``adapter``), ``http`` when it names none."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProviderFileError(f"cannot read: {exc.strerror}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProviderFileError(f"not valid TOML: {exc}", path=str(path)) from None
    kind = data.get("adapter", DEFAULT_KIND)
    if not isinstance(kind, str) or not _NAME.match(kind):
        raise ProviderFileError(
            "must name a registered adapter (lowercase letters, digits, '_', '.', '-')",
            key="adapter",
            path=str(path),
        )
    return kind


registry = AdapterRegistry()
"""The process-wide registry: built-in adapters plus installed entry points."""
registry.register("http", "adapters.http:HttpAdapter", source="built-in")

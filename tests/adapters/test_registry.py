"""The adapter registry: lazy import paths, entry-point discovery from a real (temporary) installed
distribution, duplicate names, and incomplete adapters refused at load time."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from adapters import (
    AdapterNotFound,
    ConfigError,
    DuplicateAdapter,
    IncompleteAdapter,
    ProviderAdapter,
    RegistryError,
)
from adapters.http import HttpAdapter
from adapters.registry import ENTRY_POINT_GROUP, AdapterRegistry, protocol_gaps, registry

COMPLETE = """
class Adapter:
    async def validate(self, sku, account): ...
    async def submit(self, request): ...
    async def query(self, order_key, provider_ref=None): ...
    async def verify_callback(self, raw_body, headers, now): ...
    async def balance(self): ...
    def health(self): ...
"""


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a uniquely named module on sys.path; forget it from sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(source: str) -> str:
        name = f"cardless_test_adapter_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)


def install_distribution(root: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: ``<dist>-<version>.dist-info`` with METADATA and entry points."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


# -- lazy loading ----------------------------------------------------------------------------------


def test_registration_imports_nothing_until_load(make_module) -> None:
    module = make_module(COMPLETE)
    adapters = AdapterRegistry(group=None)
    adapters.register("lazy", f"{module}:Adapter")

    assert "lazy" in adapters and adapters.names() == ["lazy"]
    assert module not in sys.modules

    cls = adapters.load("lazy")
    assert module in sys.modules
    assert cls is sys.modules[module].Adapter
    assert adapters.load("lazy") is cls  # cached
    assert isinstance(cls(), ProviderAdapter)


def test_nested_attribute_paths_load(make_module) -> None:
    module = make_module("class Outer:\n" + textwrap.indent(COMPLETE, "    "))
    adapters = AdapterRegistry(group=None)
    adapters.register("nested", f"{module}:Outer.Adapter")
    assert adapters.load("nested").__qualname__ == "Outer.Adapter"


def test_the_builtin_http_adapter_is_registered() -> None:
    assert "http" in registry
    assert registry.registration("http").source == "built-in"
    assert registry.load("http") is HttpAdapter
    assert protocol_gaps(HttpAdapter) == ([], [], [])


def test_unknown_name_lists_what_is_registered() -> None:
    adapters = AdapterRegistry(group=None)
    adapters.register("alpha", "somewhere:Alpha")
    with pytest.raises(AdapterNotFound, match=r"no adapter named 'beta' \(registered: alpha\)"):
        adapters.load("beta")


def test_import_failures_name_the_adapter_and_path(make_module) -> None:
    adapters = AdapterRegistry(group=None)
    adapters.register("ghost", "cardless_no_such_module_here:Adapter")
    with pytest.raises(
        RegistryError, match=r"adapter 'ghost' \(cardless_no_such_module_here:Adapter.*cannot import"
    ):
        adapters.load("ghost")

    module = make_module(COMPLETE)
    adapters.register("typo", f"{module}:Adaptor")
    with pytest.raises(RegistryError, match=f"{module} has no attribute Adaptor"):
        adapters.load("typo")


@pytest.mark.parametrize(
    ("name", "target", "fragment"),
    [
        ("Acme", "acme:Adapter", "lowercase"),
        ("acme", "acme.Adapter", "not 'package.module:Class'"),
        ("acme", "acme:", "not 'package.module:Class'"),
    ],
)
def test_malformed_registrations_are_refused(name, target, fragment) -> None:
    with pytest.raises(RegistryError, match=fragment):
        AdapterRegistry(group=None).register(name, target)


# -- duplicates ------------------------------------------------------------------------------------


def test_duplicate_names_are_rejected_naming_both_sources() -> None:
    adapters = AdapterRegistry(group=None)
    adapters.register("acme", "acme_one:Adapter", source="first plugin")
    with pytest.raises(DuplicateAdapter) as caught:
        adapters.register("acme", "acme_two:Adapter", source="second plugin")
    message = str(caught.value)
    assert "'acme' is claimed twice" in message
    assert "acme_one:Adapter (first plugin)" in message and "acme_two:Adapter (second plugin)" in message
    assert isinstance(caught.value, ConfigError)
    assert adapters.registration("acme").target == "acme_one:Adapter"  # the first one stands


def test_registering_the_identical_path_again_is_harmless() -> None:
    adapters = AdapterRegistry(group=None)
    adapters.register("acme", "acme:Adapter")
    adapters.register("acme", "acme:Adapter")
    assert adapters.names() == ["acme"]


# -- entry points ------------------------------------------------------------------------------------


def test_entry_points_are_discovered_lazily(tmp_path, make_module, monkeypatch) -> None:
    module = make_module(COMPLETE)
    install_distribution(tmp_path, "fake-cardless-plugin", "1.2", {"fake": f"{module}:Adapter"})

    adapters = AdapterRegistry()
    assert "fake" in adapters
    registration = adapters.registration("fake")
    assert registration.target == f"{module}:Adapter"
    assert registration.source == "entry point in fake-cardless-plugin 1.2"
    assert module not in sys.modules  # discovery reads metadata only
    assert adapters.load("fake") is sys.modules[module].Adapter


def test_entry_points_from_two_distributions_claiming_one_name_are_rejected(tmp_path, monkeypatch) -> None:
    install_distribution(tmp_path / "a", "plugin-one", "1.0", {"acme": "plugin_one:Adapter"})
    install_distribution(tmp_path / "b", "plugin-two", "2.0", {"acme": "plugin_two:Adapter"})
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    with pytest.raises(DuplicateAdapter, match=r"plugin-(one|two) \d\.0\) and plugin_(one|two):Adapter"):
        AdapterRegistry().names()


def test_an_entry_point_cannot_take_over_a_builtin_name(tmp_path, monkeypatch) -> None:
    install_distribution(tmp_path, "evil-plugin", "0.1", {"http": "evil_plugin:Adapter"})
    monkeypatch.syspath_prepend(str(tmp_path))
    adapters = AdapterRegistry()
    adapters.register("http", "adapters.http:HttpAdapter", source="built-in")
    with pytest.raises(
        DuplicateAdapter, match=r"adapters\.http:HttpAdapter \(built-in\) and evil_plugin:Adapter"
    ):
        adapters.load("http")


def test_group_none_switches_discovery_off(tmp_path, monkeypatch) -> None:
    install_distribution(tmp_path, "quiet-plugin", "1.0", {"quiet": "quiet_plugin:Adapter"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "quiet" in AdapterRegistry()
    assert "quiet" not in AdapterRegistry(group=None)


# -- incomplete adapters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            """
            class Adapter:
                async def validate(self, sku, account): ...
                async def submit(self, request): ...
                async def verify_callback(self, raw_body, headers, now): ...
            """,
            "missing query, balance, health",
        ),
        (
            """
            class Adapter:
                def validate(self, sku, account): ...
                async def submit(self, request): ...
                async def query(self, order_key, provider_ref=None): ...
                def verify_callback(self, raw_body, headers, now): ...
                async def balance(self): ...
                async def health(self): ...
            """,
            "not async: validate, verify_callback; must not be async: health",
        ),
        (
            """
            class Adapter:
                validate = None
                async def submit(self, request): ...
                async def query(self, order_key, provider_ref=None): ...
                async def verify_callback(self, raw_body, headers, now): ...
                def balance(self): ...
                def health(self): ...
            """,
            "missing validate; not async: balance",
        ),
        (
            # Subclassing the Protocol inherits its stubs; they do not count as an implementation.
            """
            from adapters import ProviderAdapter
            class Adapter(ProviderAdapter):
                async def validate(self, sku, account): ...
            """,
            "missing submit, query, verify_callback, balance, health",
        ),
    ],
)
def test_incomplete_adapters_are_refused_naming_the_methods(make_module, source, expected) -> None:
    module = make_module(source)
    adapters = AdapterRegistry(group=None)
    adapters.register("partial", f"{module}:Adapter", source="a test")
    with pytest.raises(IncompleteAdapter) as caught:
        adapters.load("partial")
    assert str(caught.value) == (
        f"adapter 'partial' ({module}:Adapter, a test) does not implement ProviderAdapter: {expected}"
    )
    assert "partial" not in adapters._loaded  # a refused adapter is not cached as usable


def test_a_non_class_target_is_refused(make_module) -> None:
    module = make_module("def Adapter():\n    return None\n")
    adapters = AdapterRegistry(group=None)
    adapters.register("func", f"{module}:Adapter")
    with pytest.raises(IncompleteAdapter, match="is a function, not a class"):
        adapters.load("func")


# -- provider files name their adapter ---------------------------------------------------------------

THIRD_PARTY = (
    COMPLETE
    + """
    def __init__(self, path, client, secrets, base_url):
        self.path, self.client, self.secrets, self.base_url = path, client, secrets, base_url

    @classmethod
    def from_file(cls, path, client, *, secrets=None, base_url=None):
        return cls(path, client, secrets, base_url)
"""
)


def test_a_third_party_adapter_installed_by_entry_point_is_built_from_its_provider_file(
    tmp_path, make_module
) -> None:
    """The whole plug-in path with nothing registered in code: a distribution's metadata names the class,
    a provider file names the kind, and the registry builds it with the caller's client and secrets."""
    module = make_module(THIRD_PARTY)
    install_distribution(tmp_path, "acme-cardless", "0.3", {"acme": f"{module}:Adapter"})
    provider = tmp_path / "acme.toml"
    provider.write_text('adapter = "acme"\nname = "acme-games"\n')
    client = object()

    adapter = AdapterRegistry().from_file(
        provider, client, secrets={"ACME_SECRET": "s"}, base_url="http://127.0.0.1:9"
    )

    assert type(adapter) is sys.modules[module].Adapter
    assert isinstance(adapter, ProviderAdapter)
    assert (adapter.path, adapter.client, adapter.secrets, adapter.base_url) == (
        provider,
        client,
        {"ACME_SECRET": "s"},
        "http://127.0.0.1:9",
    )


def test_a_provider_file_without_a_kind_is_http() -> None:
    from adapters.provider_file import bundled_provider_file
    from adapters.registry import adapter_kind

    path = bundled_provider_file("simulator")
    assert adapter_kind(path) == "http"
    text = path.read_text().replace('adapter = "http"', "")
    assert "adapter =" not in text


def test_a_provider_file_naming_an_unknown_kind_is_refused(tmp_path) -> None:
    provider = tmp_path / "p.toml"
    provider.write_text('adapter = "nowhere"\nname = "p"\n')
    with pytest.raises(AdapterNotFound, match=r"no adapter named 'nowhere'"):
        AdapterRegistry(group=None).from_file(provider, object())
    provider.write_text("adapter = 3\n")
    with pytest.raises(ConfigError, match=r"p\.toml: adapter: must name a registered adapter"):
        AdapterRegistry(group=None).from_file(provider, object())


def test_an_adapter_without_from_file_cannot_be_built_from_a_file(tmp_path, make_module) -> None:
    module = make_module(COMPLETE)
    adapters = AdapterRegistry(group=None)
    adapters.register("bare", f"{module}:Adapter", source="a test")
    provider = tmp_path / "bare.toml"
    provider.write_text('adapter = "bare"\n')
    with pytest.raises(IncompleteAdapter, match=r"has no from_file\(path, client, \*, secrets, base_url\)"):
        adapters.from_file(provider, object())


def test_the_distribution_declares_the_builtin_adapter_as_an_entry_point() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == {"http": registry.registration("http").target}

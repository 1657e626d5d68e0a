"""The CLI builds provider adapters only through the registry: the kind a provider file names decides the
class, and a third-party adapter installed as a distribution (entry-point metadata on sys.path) is used
with no code change in Cardless."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from adapters.http import HttpAdapter
from adapters.registry import AdapterRegistry
from cardless.cli.adapters import build_adapters
from tests.adapters.test_registry import THIRD_PARTY, install_distribution
from tests.support.shop import gateway_settings

BUNDLED = Path(__file__).resolve().parents[2] / "adapters" / "providers"
SECRETS = {
    "CARDLESS_SIM_SECRET": "a",
    "CARDLESS_SIM_CALLBACK_SECRET": "b",
    "CARDLESS_SIM_MD5_SECRET": "c",
    "CARDLESS_SIM_MD5_CALLBACK_SECRET": "d",
}


async def _close(clients: list[httpx.AsyncClient]) -> None:
    for client in clients:
        await client.aclose()


def test_bundled_provider_files_build_http_adapters(tmp_path: Path) -> None:
    clients: list[httpx.AsyncClient] = []
    adapters = build_adapters(
        gateway_settings(tmp_path), clients, base_url="http://127.0.0.1:9", secret_values=SECRETS
    )
    assert sorted(adapters) == ["simulator", "simulator-md5"]
    assert all(type(a) is HttpAdapter for a in adapters.values())
    assert len(clients) == 2  # one client per provider
    asyncio.run(_close(clients))


def test_a_third_party_adapter_is_loaded_by_name_from_entry_point_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"acme_cardless_{uuid.uuid4().hex[:10]}"
    # The registry's fake adapter, renamed, with the provider name the CLI keys adapters by.
    source = THIRD_PARTY.replace("class Adapter:", 'class AcmeAdapter:\n    name = "acme-games"')
    (tmp_path / f"{module}.py").write_text(source)
    install_distribution(tmp_path, "acme-cardless", "1.0", {"acme": f"{module}:AcmeAdapter"})
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = tmp_path / "acme.toml"
    provider.write_text('adapter = "acme"\nname = "acme-games"\n')
    settings = gateway_settings(tmp_path / "var", provider_files=[provider, BUNDLED / "simulator.toml"])

    clients: list[httpx.AsyncClient] = []
    try:
        adapters = build_adapters(
            settings,
            clients,
            base_url=None,
            secret_values=SECRETS,
            adapters_registry=_fresh_registry(),
        )
        assert sorted(adapters) == ["acme-games", "simulator"]
        acme = adapters["acme-games"]
        assert type(acme).__name__ == "AcmeAdapter" and type(acme).__module__ == module
        assert acme.path == provider and acme.secrets == SECRETS  # type: ignore[attr-defined]
    finally:
        sys.modules.pop(module, None)
        asyncio.run(_close(clients))


def _fresh_registry() -> AdapterRegistry:
    """The process-wide registry may have discovered entry points before this test's sys.path change."""
    fresh = AdapterRegistry()
    fresh.register("http", "adapters.http:HttpAdapter", source="built-in")
    return fresh

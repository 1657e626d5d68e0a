"""The catalogue: GET /v1/catalogue on the embedded system, and load_catalogue on bad files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cardless.cli.system import System
from cardless.ledger.models import Merchant, Sku
from cardless.protocol import NATIVE_TOKEN
from gateway.catalogue import Catalogue, CatalogueError, load_catalogue
from tests.support.shop import Shop

SHIPPED = Path(__file__).resolve().parents[2] / "gateway" / "catalogue.toml"


def test_catalogue_endpoint_lists_merchants_skus_and_prices_per_token(shop: Shop, system: System) -> None:
    body = shop.api.get("/v1/catalogue").raise_for_status().json()
    assert system.deployment is not None
    assert body["chain_id"] == system.deployment.chain_id == shop.chain_id
    assert body["escrow"] == shop.escrow.address
    assert set(body) == {"chain_id", "escrow", "merchants", "skus"}

    catalogue = load_catalogue(system.settings.catalogue_file)
    assert body["merchants"] == [
        {"id": m.id, "name": m.name, "address": m.address, "fee_bps": m.fee_bps} for m in catalogue.merchants
    ]
    tokens = {t.symbol: t for t in system.deployment.tokens}
    assert [s["id"] for s in body["skus"]] == [s.id for s in catalogue.skus]
    for listed, sku in zip(body["skus"], catalogue.skus, strict=True):
        assert set(listed) == {"id", "title", "merchant", "prices"}
        assert (listed["title"], listed["merchant"]) == (sku.title, sku.merchant)
        assert "providers" not in listed  # the provider routing is ours, not the buyer's business
        assert {p["token"] for p in listed["prices"]} == set(sku.prices)
        for price in listed["prices"]:
            # Money on the wire: an integer in base units, as a string (no float, no rounding in JSON).
            assert isinstance(price["amount"], str)
            assert re.fullmatch(r"[1-9][0-9]*", price["amount"])
            assert int(price["amount"]) == sku.prices[price["token"]]
            token = tokens[price["token"]]
            assert (price["address"], price["decimals"]) == (token.address, token.decimals)


def test_catalogue_prices_are_the_shipped_ones(shop: Shop) -> None:
    skus = {s["id"]: s for s in shop.api.get("/v1/catalogue").json()["skus"]}
    genshin = {p["token"]: p for p in skus["genshin-60"]["prices"]}
    assert genshin["tUSDC"]["amount"] == "990000"  # 0.99 tUSDC at 6 decimals
    assert genshin["ETH"] == {
        "token": "ETH",
        "address": NATIVE_TOKEN,
        "decimals": 18,
        "amount": "330000000000000",
    }
    assert [p["token"] for p in skus["genshin-980"]["prices"]] == ["tUSDC"]


def test_shipped_catalogue_loads_and_names_configured_providers() -> None:
    catalogue = load_catalogue(SHIPPED)
    catalogue.check_providers({"simulator", "simulator-md5"})
    assert {p for s in catalogue.skus for p in s.providers} == {"simulator", "simulator-md5"}


# ---------------------------------------------------------------------------------------- bad files

MERCHANT = """
[[merchants]]
id = "shop"
name = "Shop"
address = "0xE57bFE9F44b819898F47BF37E5AF72a0783e1141"
fee_bps = 250
"""
SKU = """
[[skus]]
id = "sku-1"
title = "One"
merchant = "shop"
providers = ["simulator"]
prices = { tUSDC = 1_000 }
"""


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param(MERCHANT + SKU.replace("1_000", "-5"), "skus.0.prices", id="negative-price"),
        pytest.param(MERCHANT + SKU.replace("1_000", "0"), "skus.0.prices", id="zero-price"),
        pytest.param(MERCHANT + SKU.replace("1_000", "0.99"), "skus.0.prices.tUSDC", id="float-price"),
        pytest.param(
            MERCHANT + SKU.replace("prices = { tUSDC = 1_000 }", "prices = {}"),
            "skus.0.prices",
            id="no-price",
        ),
        pytest.param(
            MERCHANT.replace("fee_bps = 250", "fee_bps = 20000") + SKU,
            "merchants.0.fee_bps",
            id="fee-above-100-percent",
        ),
        pytest.param(
            MERCHANT.replace("0xE57bFE9F44b819898F47BF37E5AF72a0783e1141", "0x1234") + SKU,
            "merchants.0.address",
            id="bad-address",
        ),
        pytest.param(MERCHANT.replace('name = "Shop"\n', "") + SKU, "merchants.0.name", id="missing-name"),
        pytest.param(
            MERCHANT + SKU.replace('title = "One"', 'title = "One"\ncolour = "red"'),
            "skus.0.colour",
            id="unknown-key",
        ),
        pytest.param(MERCHANT + SKU.replace('id = "sku-1"', 'id = "SKU 1"'), "skus.0.id", id="bad-sku-id"),
        pytest.param(
            MERCHANT + SKU.replace('providers = ["simulator"]', "providers = []"),
            "skus.0.providers",
            id="no-provider",
        ),
        pytest.param(
            MERCHANT + SKU.replace('merchant = "shop"', 'merchant = "nobody"'),
            "unknown merchant 'nobody'",
            id="unknown-merchant",
        ),
        pytest.param(MERCHANT + SKU + SKU, "sku ids must be unique", id="duplicate-sku"),
        pytest.param(SKU, "merchants", id="no-merchants"),
        pytest.param(MERCHANT + SKU + "[[skus]\n", "line", id="toml-syntax-error"),
    ],
)
def test_corrupted_catalogue_names_the_bad_key(tmp_path: Path, text: str, names: str) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(text)
    with pytest.raises(CatalogueError) as raised:
        load_catalogue(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert names in message


def test_missing_catalogue_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="No such file"):
        load_catalogue(tmp_path / "nope.toml")


def test_catalogue_naming_a_provider_that_is_not_configured_is_refused() -> None:
    catalogue = load_catalogue(SHIPPED)
    with pytest.raises(
        CatalogueError, match=r"sku genshin-60: providers \['simulator-md5'\] are not configured"
    ):
        catalogue.check_providers({"simulator"})


def test_catalogue_lookups() -> None:
    catalogue: Catalogue = load_catalogue(SHIPPED)
    assert catalogue.sku("genshin-60") is not None
    assert catalogue.sku("nope") is None
    assert catalogue.merchant("paimon-shop").fee_bps == 250


def test_the_quotes_catalogue_cache_follows_edits_at_once_and_other_processes_within_its_ttl(
    migrated_db: sessionmaker[Session],
) -> None:
    from sqlalchemy import text

    from gateway.services.skus import QuotableCache, seed_catalogue

    with migrated_db() as session:
        seed_catalogue(session, load_catalogue(Path(__file__).parents[2] / "gateway" / "catalogue.toml"))
        session.commit()
        merchant_id = session.get_one(Sku, "genshin-60").merchant_id
    cache = QuotableCache(ttl=0.5)
    first = cache.get(migrated_db, "genshin-60")
    assert first is not None and first.prices["tUSDC"] > 0
    assert cache.get(migrated_db, "genshin-60") is first  # no query: the same object
    assert cache.get(migrated_db, "no-such-sku") is None

    # An ORM edit committed in this process is seen by the very next quote.
    with migrated_db.begin() as session:
        session.get_one(Sku, "genshin-60").enabled = False
    assert cache.get(migrated_db, "genshin-60") is None
    with migrated_db.begin() as session:
        session.get_one(Sku, "genshin-60").enabled = True
        session.get_one(Merchant, merchant_id).fee_bps = 123
    again = cache.get(migrated_db, "genshin-60")
    assert again is not None and again.fee_bps == 123
    # A rolled-back edit changes nothing, and empties nothing.
    with migrated_db() as session:
        session.get_one(Sku, "genshin-60").enabled = False
        session.flush()
        session.rollback()
    assert cache.get(migrated_db, "genshin-60") is again

    # An edit the ORM never sees (another process): within the TTL the cached terms, then the new ones.
    with migrated_db.begin() as session:
        session.execute(text("UPDATE skus SET enabled = 0 WHERE id = 'genshin-60'"))
    assert cache.get(migrated_db, "genshin-60") is again
    time.sleep(0.6)
    assert cache.get(migrated_db, "genshin-60") is None

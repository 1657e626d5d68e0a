"""``cardless merchant add|list|disable``, ``cardless merchant key create|list|rotate|revoke`` and
``cardless catalogue load``: the operator's commands, run against the database of the settings
(``CARDLESS_DATABASE_URL``) through the same services as the admin API. ``merchant add`` reads the
escrow's fee cap from the chain of the deployment file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from cardless.cli.settings import Settings

__all__ = ["catalogue_app", "merchant_app"]

merchant_app = typer.Typer(help="Merchants (operator).", no_args_is_help=True)
key_app = typer.Typer(help="A merchant's API keys (operator).", no_args_is_help=True)
merchant_app.add_typer(key_app, name="key")
catalogue_app = typer.Typer(help="The catalogue in the database.", no_args_is_help=True)
console = Console(stderr=True, width=200)


def _sessions() -> Any:
    from cardless.ledger import create_engine_for, migrate, session_factory

    settings = Settings()
    engine = create_engine_for(settings.effective_database_url)
    migrate(engine)
    return settings, session_factory(engine)


def _print(value: Any) -> None:
    data = value.model_dump(mode="json", by_alias=True) if hasattr(value, "model_dump") else value
    if isinstance(data, list):
        data = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in data]
    print(json.dumps(data, indent=2))


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]refused:[/red] {exc}", soft_wrap=True, highlight=False, markup=True)
    return typer.Exit(1)


def _run(action: Any) -> None:
    from gateway.services import GatewayError

    try:
        _print(action())
    except (GatewayError, ValidationError, OSError, ValueError) as exc:
        raise _fail(exc) from exc


@merchant_app.command("add")
def add(
    merchant_id: Annotated[str, typer.Argument(help="lower-case id, e.g. paimon-shop")],
    name: Annotated[str, typer.Option(help="Display name")],
    address: Annotated[str, typer.Option(help="The account the escrow credits on settlement")],
    fee_bps: Annotated[int, typer.Option(help="Platform fee in basis points (within the escrow's cap)")],
) -> None:
    """Add a merchant; prints it as JSON."""
    from web3 import HTTPProvider, Web3

    from cardless.protocol.deployment import load_deployment
    from gateway.merchant_schemas import MerchantCreate
    from gateway.services import merchants

    def action() -> Any:
        settings, sessions = _sessions()
        body = MerchantCreate(id=merchant_id, name=name, address=address, fee_bps=fee_bps)
        w3 = Web3(HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 10}))
        deployment = load_deployment(settings.effective_deployment_file, w3)
        with sessions() as session:
            return merchants.create_merchant(session, body, cap_bps=merchants.fee_cap(w3, deployment))

    _run(action)


@merchant_app.command("list")
def list_() -> None:
    """Every merchant, as JSON."""
    from gateway.services import merchants

    def action() -> Any:
        _, sessions = _sessions()
        with sessions() as session:
            return merchants.list_merchants(session)

    _run(action)


@merchant_app.command("disable")
def disable(
    merchant_id: str, reason: Annotated[str, typer.Option(help="Why (kept with the merchant)")]
) -> None:
    """Disable a merchant: its SKUs leave the catalogue and its API keys stop working."""
    from gateway.services import merchants

    def action() -> Any:
        _, sessions = _sessions()
        with sessions() as session:
            return merchants.disable_merchant(session, merchant_id, reason)

    _run(action)


@key_app.command("create")
def key_create(
    merchant_id: str,
    scope: Annotated[
        list[str], typer.Option(help="catalogue:write, orders:read, webhooks:write, payouts:read, audit:read")
    ],
    name: Annotated[str, typer.Option(help="What the key is for")] = "default",
    expires_in_days: Annotated[int | None, typer.Option(min=1, max=3650)] = None,
    rate_limit: Annotated[str | None, typer.Option(help="This key's quota, e.g. 600/minute")] = None,
) -> None:
    """Create an API key; the whole key is printed once and never again."""
    from gateway.merchant_schemas import ApiKeyCreate
    from gateway.services import api_keys

    def action() -> Any:
        _, sessions = _sessions()
        body = ApiKeyCreate.model_validate(
            {"name": name, "scopes": scope, "expires_in_days": expires_in_days, "rate_limit": rate_limit}
        )
        with sessions() as session:
            return api_keys.create_key(session, merchant_id, body)

    _run(action)


@key_app.command("list")
def key_list(merchant_id: str) -> None:
    """The merchant's keys (prefixes, scopes, expiry, last use; no secrets)."""
    from gateway.services import api_keys

    def action() -> Any:
        _, sessions = _sessions()
        with sessions() as session:
            return api_keys.list_keys(session, merchant_id)

    _run(action)


@key_app.command("rotate")
def key_rotate(
    merchant_id: str,
    key_id: int,
    overlap_seconds: Annotated[int, typer.Option(min=0, max=7 * 86_400)] = 86_400,
) -> None:
    """Replace a key; the old one works for --overlap-seconds more."""
    from gateway.services import api_keys

    def action() -> Any:
        _, sessions = _sessions()
        with sessions() as session:
            return api_keys.rotate_key(session, merchant_id, key_id, overlap_seconds)

    _run(action)


@key_app.command("revoke")
def key_revoke(merchant_id: str, key_id: int) -> None:
    """Revoke a key now."""
    from gateway.services import api_keys

    def action() -> Any:
        _, sessions = _sessions()
        with sessions() as session:
            return api_keys.revoke_key(session, merchant_id, key_id)

    _run(action)


@catalogue_app.command("load")
def load(
    path: Annotated[Path, typer.Argument(help="A catalogue TOML file (gateway/catalogue.toml)")],
) -> None:
    """Add the file's merchants and SKUs that the database lacks (edited rows are left alone)."""
    from gateway.catalogue import CatalogueError, load_catalogue
    from gateway.services.skus import seed_catalogue

    def action() -> Any:
        _, sessions = _sessions()
        catalogue = load_catalogue(path)
        with sessions() as session:
            merchants, skus = seed_catalogue(session, catalogue)
        return {"merchants_added": merchants, "skus_added": skus}

    try:
        _run(action)
    except CatalogueError as exc:
        raise _fail(exc) from exc

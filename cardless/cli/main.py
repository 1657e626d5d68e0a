"""The ``cardless`` command."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from eth_account import Account
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from cardless.cli.settings import Settings

if TYPE_CHECKING:
    from cardless.cli.system import System

app = typer.Typer(help="Cardless: direct top-up settlement through an on-chain escrow.", no_args_is_help=True)
# Keys and addresses must print whole even when stderr is a pipe or a log file (Rich assumes 80 columns).
console = Console(stderr=True)
if not console.is_terminal:
    console = Console(stderr=True, width=200)


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(name)s: %(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    for noisy in ("httpx", "alembic", "apscheduler", "uvicorn.access", "web3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings_problem(exc: ValidationError) -> str:
    """Name the environment variable at fault, and leave its value out (it may hold a password)."""
    problems = []
    for error in exc.errors(include_url=False):
        where = "CARDLESS_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(problems)


def _start(**options: Any) -> System:
    """Read the settings and start a System; a bad variable, deployment file, keystore password or
    catalogue ends the command with one line naming what is wrong (exit 1), not a traceback."""
    from cardless.cli.system import System

    system: System | None = None
    try:
        system = System(Settings(), **options)
        system.start()
    except Exception as exc:
        message = _settings_problem(exc) if isinstance(exc, ValidationError) else str(exc)
        console.print(f"[red]start-up failed:[/red] {escape(message)}", soft_wrap=True)
        if system is not None:
            system.stop()
        raise typer.Exit(1) from exc
    return system


def _wait_for_ctrl_c(ready: str | None = None) -> None:
    """Block until SIGINT or SIGTERM. ``ready`` is printed once both are handled, so whoever waits for
    it can stop the process cleanly from then on."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if ready:
        console.print(ready, soft_wrap=True, highlight=False)
    stop.wait()


@app.command()
def run() -> None:
    """Start the embedded system: chain, contracts, simulated provider, gateway and oracle."""
    _logging()
    system = _start()
    info = system.describe()
    table = Table(title="Cardless embedded system", show_header=False)
    for key, value in info.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)
    accounts = Table(title="Dev accounts (keys are public: development only)")
    accounts.add_column("key")
    accounts.add_column("address")
    accounts.add_column("role")
    roles = {
        1: "owner / deployer",
        2: "fee recipient",
        6: "merchant paimon-shop",
        7: "merchant chicken-dinner",
    }
    for index in range(1, 11):
        key = "0x" + index.to_bytes(32, "big").hex()
        accounts.add_row(key, Account.from_key(key).address, roles.get(index, "buyer (1,000,000 tUSDC)"))
    console.print(accounts)
    console.print(
        f"Try: [bold]cardless demo --orders 10[/bold]   API docs: {info['gateway']}/docs   Ctrl-C stops."
    )
    try:
        _wait_for_ctrl_c()
    finally:
        console.print("stopping...")
        system.stop()


@app.command()
def oracle() -> None:
    """Run one oracle worker against CARDLESS_CHAIN_RPC_URL and the deployment file."""
    _logging()
    system = _start(embedded=False, gateway=False, oracle=True)
    escrow = system.deployment.escrow if system.deployment else "?"
    try:
        _wait_for_ctrl_c(f"oracle running: chain {system.settings.chain_rpc_url}, escrow {escrow}")
    finally:
        system.stop()


@app.command()
def simulator(port: int = 8601) -> None:
    """Serve the simulated top-up provider on 127.0.0.1:PORT."""
    from adapters.simulator.server import SimulatorServer

    _logging()
    server = SimulatorServer(port=port)
    server.start()
    console.print(f"simulated provider at {server.url}")
    try:
        _wait_for_ctrl_c()
    finally:
        server.stop()


@app.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, max=10_000, help="How many purchases")] = 10,
    faults: Annotated[str | None, typer.Option(help="'mixed' arms provider faults on some orders")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Last line: one JSON object of totals")] = False,
    gateway_url: Annotated[
        str | None, typer.Option(help="A running gateway (default: from settings)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for orders to settle")] = 300.0,
) -> None:
    """Run N purchases from dev wallets against a running system, or an embedded one started here."""
    from cardless.cli.demo import run_demo
    from cardless.cli.system import System

    if faults not in (None, "mixed"):
        raise typer.BadParameter("only 'mixed' is supported", param_hint="--faults")
    _logging("WARNING")
    settings = Settings()
    url = gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    system: System | None = None
    try:
        httpx.get(f"{url}/v1/health", timeout=2).raise_for_status()
        console.print(f"using the running system at {url}")
    except httpx.HTTPError:
        if gateway_url:
            console.print(f"[red]no gateway answers at {gateway_url}[/red]")
            raise typer.Exit(1) from None
        console.print("no running system found: starting an embedded one")
        system = System(settings.model_copy(update={"chain_port": 0, "gateway_port": 0, "simulator_port": 0}))
        system.start()
        url = system.gateway_url
    done = 0

    def progress(order: object) -> None:
        nonlocal done
        done += 1
        if not as_json:
            console.print(
                f"  {getattr(order, 'index', '?'):>4} {getattr(order, 'state', '')}", highlight=False
            )

    try:
        report = run_demo(url, orders=orders, faults=faults, timeout=timeout, progress=progress)
    finally:
        if system is not None:
            system.stop()
    table = Table(title=f"cardless demo: {orders} orders" + (f", faults {faults}" if faults else ""))
    for column in (
        "#",
        "order",
        "sku",
        "token",
        "fault",
        "paid tx",
        "provider ref",
        "proof/refund tx",
        "state",
        "ms",
    ):
        table.add_column(column)
    for o in report.orders:
        table.add_row(
            str(o.index),
            o.order_id[:10],
            o.sku,
            o.token,
            o.fault or "",
            o.paid_tx[:10],
            o.provider_ref or "",
            (o.proof_tx or "")[:10],
            o.state,
            f"{o.latency_ms:.0f}" if o.latency_ms is not None else "",
        )
    totals = report.totals()
    out = Console(width=180)
    if not as_json:
        out.print(table)
        out.print(totals)
    else:
        Console(stderr=True, width=180).print(table)
        print(json.dumps(totals))
    healthy = totals["open"] == 0 and totals["double_topups"] == 0 and totals["balance_mismatch_wei"] == 0
    raise typer.Exit(0 if healthy else 1)


if __name__ == "__main__":
    app()

"""The ``cardless`` command: run | gateway | oracle | deploy | migrate | simulator | demo | merchant |
catalogue | audit.

Commands import what they run and nothing more: ``oracle`` loads no web framework and no simulator,
``deploy`` no dev chain (the wiring modules are imported inside the commands).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from eth_account import Account
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from cardless.cli.audit import audit_app
from cardless.cli.cosigner import cosigner as cosigner_command
from cardless.cli.merchants import catalogue_app, merchant_app
from cardless.cli.report import report as report_command
from cardless.cli.settings import Settings
from cardless.protocol.jsonlimits import restore_recursion_limit

if TYPE_CHECKING:
    from cardless.cli.supervisor import RestartPolicy
    from cardless.cli.system import System

EXIT_CHILD_FAILED = 3
"""``cardless run`` / ``cardless demo``: a child process the system cannot do without died (the dev
chain), or one kept failing; the message says which (cardless.cli.supervisor)."""

# eth_account (above) brought in py_ecc, which set the recursion limit to 100,000: back to what py-evm
# needs, before any command runs.
restore_recursion_limit()

app = typer.Typer(help="Cardless: direct top-up settlement through an on-chain escrow.", no_args_is_help=True)
app.add_typer(merchant_app, name="merchant")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(audit_app, name="audit")
app.command("report")(report_command)
app.command("cosigner")(cosigner_command)
# Keys and addresses must print whole even when stderr is a pipe or a log file (Rich assumes 80 columns).
console = Console(stderr=True)
if not console.is_terminal:
    console = Console(stderr=True, width=200)


def _logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Rich lines on a terminal, plain lines on a pipe or a file, or JSON lines
    (``CARDLESS_LOG_FORMAT=json``, the default outside development; see ``cardless.cli.logs``) on
    standard error."""
    if json_lines is None:
        try:
            json_lines = Settings().effective_log_format == "json"
        except ValidationError:
            json_lines = False  # the command reports the settings problem itself
    if json_lines:
        from cardless.cli.logs import JsonFormatter

        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    elif console.is_terminal:
        handler = RichHandler(console=console, show_path=False)
    else:
        # A pipe or a file (a child of `cardless run`, a bench, a service manager): plain lines. Rich's
        # highlighting and wrapping cost the oracle ~5 % of its CPU at saturation, for colours nobody sees.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler])
    for noisy in ("httpx", "alembic", "apscheduler", "uvicorn.access", "web3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings_problem(exc: ValidationError) -> str:
    """Name the environment variable at fault, and leave its value out (it may hold a password)."""
    problems = []
    for error in exc.errors(include_url=False):
        where = "CARDLESS_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(problems)


def _fail(exc: Exception, what: str = "start-up failed") -> typer.Exit:
    message = _settings_problem(exc) if isinstance(exc, ValidationError) else str(exc)
    console.print(f"[red]{what}:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def start_system(
    *,
    embedded: bool = True,
    gateway: bool = True,
    oracle: bool = True,
    children: bool = False,
    overrides: dict[str, Any] | None = None,
    restart_policy: RestartPolicy | None = None,
) -> System:
    """Read the settings (``overrides``: command-line options over the environment) and start a System; a
    bad variable, deployment file, keystore password or catalogue ends the command with one line naming
    what is wrong (exit 1), not a traceback."""
    from cardless.cli.system import System

    system: System | None = None
    try:
        settings = Settings(**(overrides or {}))
        system = System(settings, embedded=embedded, gateway=gateway, oracle=oracle, children=children)
        system.restart_policy = restart_policy
        system.start()
    except BaseException as exc:  # Ctrl-C during start-up too: a started dev chain must not outlive us
        if system is not None:
            system.stop()
        if isinstance(exc, Exception):
            raise _fail(exc) from exc
        raise
    return system


def _wait_for_ctrl_c(ready: str | None = None, *, until: threading.Event | None = None) -> None:
    """Block until SIGINT or SIGTERM (or ``until`` is set otherwise). ``ready`` is printed once both are
    handled, so whoever waits for it can stop the process cleanly from then on."""
    stop = until if until is not None else threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if ready:
        console.print(ready, soft_wrap=True, highlight=False)
    stop.wait()


@app.command()
def run(
    chain: Annotated[
        str | None,
        typer.Option(
            help="Dev chain: 'embedded' (in-process py-evm) or 'anvil' (npm @foundry-rs/anvil); "
            "default CARDLESS_DEV_CHAIN, else embedded"
        ),
    ] = None,
    max_restarts: Annotated[
        int,
        typer.Option(
            min=0,
            max=1000,
            help="Restarts of the oracle worker or the simulated provider within 2 minutes before the "
            "system gives up and stops (exit 3); 0: the first unexpected exit stops it",
        ),
    ] = 5,
) -> None:
    """Start the embedded system: chain, contracts, simulated provider, gateway and oracle.

    The oracle worker and the simulated provider are restarted if they die (back-off 0.5 s doubling to
    30 s); if the dev chain dies, or a child keeps failing, the system stops with exit code 3."""
    from cardless.cli.supervisor import RestartPolicy

    if chain not in (None, "embedded", "anvil"):
        raise typer.BadParameter("'embedded' or 'anvil'", param_hint="--chain")
    _logging()
    # The node, the simulated provider and the oracle in child processes, supervised (cardless.cli.child,
    # cardless.cli.supervisor).
    system = start_system(
        children=True,
        overrides={"dev_chain": chain} if chain else None,
        restart_policy=RestartPolicy(max_restarts=max_restarts),
    )
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
        _wait_for_ctrl_c(until=system.halt)
    finally:
        console.print("stopping...")
        system.stop()
    if system.failure is not None:
        console.print(f"[red]cardless run stopped:[/red] {escape(system.failure)}", soft_wrap=True)
        raise typer.Exit(EXIT_CHILD_FAILED)


def _serve_against_node(role: str, *, gateway: bool, oracle: bool) -> None:
    """Start one role against CARDLESS_CHAIN_RPC_URL and the deployment file, announce it once SIGINT and
    SIGTERM are handled (whoever waits for the line can stop it cleanly from then on), run until told."""
    _logging()
    system = start_system(embedded=False, gateway=gateway, oracle=oracle)
    if gateway and not oracle:
        # What start-up built (modules, the app, the adapters, the caches) lives as long as the process:
        # frozen, a full pass of the cyclic collector no longer walks it. A pass walked ~250,000 objects
        # in ~120 ms, every request in flight stopped meanwhile: the API's p99 (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
    escrow = system.deployment.escrow if system.deployment else "?"
    where = f"chain {system.settings.chain_rpc_url}, escrow {escrow}"
    try:
        _wait_for_ctrl_c(
            f"{role} running: {system.gateway_url} ({where})" if gateway else f"{role} running: {where}"
        )
    finally:
        system.stop()


@app.command()
def gateway() -> None:
    """Serve the API alone against CARDLESS_CHAIN_RPC_URL, the deployment file and the database."""
    _serve_against_node("gateway", gateway=True, oracle=False)


@app.command()
def oracle(
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes to run and keep running; they share the database (PostgreSQL to add "
            "workers on other machines)",
        ),
    ] = 1,
) -> None:
    """Run oracle workers against CARDLESS_CHAIN_RPC_URL and the deployment file."""
    if workers == 1:
        _serve_against_node("oracle", gateway=False, oracle=True)
        return
    _serve_pool(workers)


def _serve_pool(count: int) -> None:
    """``count`` worker processes under a supervisor (``cardless.cli.workers``), until SIGINT/SIGTERM."""
    from cardless.cli.workers import WorkerPool, pool_environment

    _logging()
    try:
        settings = Settings()
    except ValidationError as exc:
        raise _fail(exc) from exc
    if settings.effective_database_url.startswith("sqlite"):
        console.print(
            "[yellow]several workers on one SQLite file take turns at every write; set "
            "CARDLESS_DATABASE_URL to PostgreSQL[/yellow]",
            soft_wrap=True,
        )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pool = WorkerPool(count, env=pool_environment())
    where = f"chain {settings.chain_rpc_url}, deployment {settings.effective_deployment_file}"

    def ready() -> None:
        pids = ", ".join(str(p) for p in pool.pids())
        line = f"oracle running: {count} workers (pids {pids}), {where}"
        console.print(line, soft_wrap=True, highlight=False)

    raise typer.Exit(pool.run(stop, on_ready=ready))


@app.command("migrate")
def migrate_database() -> None:
    """Bring the database (CARDLESS_DATABASE_URL) to the newest schema, then exit.

    Every command migrates at start; this lets a deploy move the schema first and the code second."""
    from alembic.migration import MigrationContext

    from cardless.ledger import create_engine_for, migrate

    _logging()
    try:
        settings = Settings()
        engine = create_engine_for(settings.effective_database_url)
    except (ValidationError, ValueError) as exc:
        raise _fail(exc, "migrate failed") from exc
    try:
        migrate(engine)
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:
        raise _fail(exc, "migrate failed") from exc
    finally:
        engine.dispose()
    console.print(f"database at revision {revision}", highlight=False)


def _address(value: str, option: str) -> Any:
    from web3 import Web3

    try:
        return Web3.to_checksum_address(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an address", param_hint=option) from None


def _keystore_address(path: Path, option: str) -> Any:
    """The address a keystore file declares (no password needed), for a default signer."""
    try:
        return _address(str(json.loads(path.read_text())["address"]), option)
    except (OSError, ValueError, KeyError, TypeError):
        raise typer.BadParameter(
            f"not given, and {path} holds no keystore address to default to", param_hint=option
        ) from None


@app.command()
def deploy(
    owner_keystore: Annotated[
        Path, typer.Option(help="Encrypted keystore of the escrow owner (pays the gas, signs locally)")
    ],
    fee_recipient: Annotated[str, typer.Option(help="Address credited with platform fees")],
    fee_cap_bps: Annotated[
        int, typer.Option(min=0, max=10_000, help="Highest fee a quote may carry")
    ] = 1_000,
    quote_signer: Annotated[
        list[str] | None, typer.Option(help="Quote signer (repeatable; default: this machine's keystore)")
    ] = None,
    oracle_signer: Annotated[
        list[str] | None, typer.Option(help="Oracle signer (repeatable; default: this machine's keystore)")
    ] = None,
    token: Annotated[
        list[str] | None,
        typer.Option(help="ERC-20 token to allow (repeatable); symbol/decimals read from it"),
    ] = None,
    native: Annotated[bool, typer.Option("--native/--no-native", help="Allow payment in native ETH")] = True,
    owner_password_file: Annotated[
        Path | None,
        typer.Option(help="Password of the owner keystore (default: the keystore password setting)"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing deployment file")] = False,
    receipt_timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each receipt")] = 300.0,
    admin_delay: Annotated[
        int, typer.Option(min=0, help="Seconds an owner change waits after its announcement (0: dev chains)")
    ] = 2 * 24 * 3600,
    oracle_threshold: Annotated[
        int, typer.Option(min=1, max=255, help="Distinct oracle signatures settlement and refunds need")
    ] = 1,
) -> None:
    """Deploy and configure the escrow on CARDLESS_CHAIN_RPC_URL; write the deployment file."""
    from web3 import HTTPProvider, Web3

    from cardless.cli.deploy import DeployPlan, deploy_escrow
    from cardless.cli.keys import KEYSTORE_FILES, keystore_password
    from cardless.protocol.deployment import load_deployment
    from oracles.keys import KeystoreError, load_keystore

    _logging()
    try:
        settings = Settings()
    except ValidationError as exc:
        raise _fail(exc, "deploy failed") from exc
    target = settings.effective_deployment_file
    if target.exists() and not force:
        console.print(f"[red]deploy refused:[/red] {target} exists (CARDLESS_DEPLOYMENT_FILE); pass --force")
        raise typer.Exit(1)
    keys = settings.effective_keystore_dir
    quote = [_address(a, "--quote-signer") for a in quote_signer or []] or [
        _keystore_address(keys / KEYSTORE_FILES["quote"], "--quote-signer")
    ]
    oracles_ = [_address(a, "--oracle-signer") for a in oracle_signer or []] or [
        _keystore_address(keys / KEYSTORE_FILES["oracle"], "--oracle-signer")
    ]
    try:
        if owner_password_file is not None:
            password = owner_password_file.read_text().strip()
        elif settings.keystore_password is not None or settings.keystore_password_file is not None:
            password = keystore_password(settings)
        else:
            raise KeystoreError(
                "no password for the owner keystore: pass --owner-password-file or set "
                "CARDLESS_KEYSTORE_PASSWORD_FILE"
            )
        owner = load_keystore(owner_keystore, password)
        plan = DeployPlan(
            fee_recipient=_address(fee_recipient, "--fee-recipient"),
            fee_cap_bps=fee_cap_bps,
            quote_signers=quote,
            oracle_signers=oracles_,
            tokens=[_address(a, "--token") for a in token or []],
            allow_native=native,
            rpc_url=settings.chain_rpc_url,
            admin_delay=admin_delay,
            oracle_threshold=oracle_threshold,
            # the oracle's sweep job sends withdraw() from the gas key, which the escrow must allow
            sweepers=[_keystore_address(gas, "gas keystore")]
            if (gas := keys / KEYSTORE_FILES["gas"]).exists()
            else [],
        )
        w3 = Web3(HTTPProvider(settings.chain_rpc_url, request_kwargs={"timeout": 30}))
        deployment = deploy_escrow(
            w3,
            owner,
            plan,
            receipt_timeout=receipt_timeout,
            progress=lambda m: console.print(m, highlight=False),
        )
        deployment.save(target)
        load_deployment(target, w3)  # what `cardless gateway` and `cardless oracle` will check
    except (OSError, ValueError, RuntimeError, KeystoreError) as exc:
        raise _fail(exc, "deploy failed") from exc
    console.print(f"deployment written to {target}: escrow {deployment.escrow}", highlight=False)


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
    synthetic: Annotated[
        bool,
        typer.Option(help="Instead: 30 days of synthetic traffic, risk replay and report (var/synthetic)"),
    ] = False,
) -> None:
    """Run N purchases from dev wallets against a running system, or an embedded one started here."""
    if synthetic:
        from cardless.cli.report import synthetic_demo

        result = synthetic_demo(Settings().var_dir / "synthetic")
        typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=1))
        raise typer.Exit(0)
    from cardless.cli.demo import run_demo
    from cardless.cli.system import System

    if faults not in (None, "mixed"):
        raise typer.BadParameter("only 'mixed' is supported", param_hint="--faults")
    _logging("WARNING")
    settings = Settings()
    url = gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    system: System | None = None
    operator: str | None = None
    try:
        httpx.get(f"{url}/v1/health", timeout=2).raise_for_status()
        console.print(f"using the running system at {url}")
        if settings.is_development:  # the running system's key, to register the demo's webhook receiver
            from cardless.cli.keys import operator_key

            operator = operator_key(settings)
    except httpx.HTTPError:
        if gateway_url:
            console.print(f"[red]no gateway answers at {gateway_url}[/red]")
            raise typer.Exit(1) from None
        console.print("no running system found: starting an embedded one")
        system = System(
            settings.model_copy(update={"chain_port": 0, "gateway_port": 0, "simulator_port": 0}),
            children=True,
        )
        # A child the system cannot do without died: interrupt the demo (KeyboardInterrupt below).
        system.on_failure = lambda _message: os.kill(os.getpid(), signal.SIGINT)
        system.start()
        url = system.gateway_url
        operator = system.operator_key
    done = 0

    def progress(order: object) -> None:
        nonlocal done
        done += 1
        if not as_json:
            console.print(
                f"  {getattr(order, 'index', '?'):>4} {getattr(order, 'state', '')}", highlight=False
            )

    try:
        report = run_demo(
            url,
            orders=orders,
            faults=faults,
            timeout=timeout,
            progress=progress,
            operator_key=operator,
            heads_url=(getattr(system.node, "ws_url", "") if system else settings.chain_ws_url) or None,
        )
    except KeyboardInterrupt:
        if system is None or system.failure is None:
            raise
        system.stop()
        console.print(f"[red]cardless demo stopped:[/red] {escape(system.failure)}", soft_wrap=True)
        raise typer.Exit(EXIT_CHILD_FAILED) from None
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
    hooks = report.webhooks
    if hooks is not None:
        healthy = healthy and hooks["orders_missing_events"] == 0 and hooks["bad_signatures"] == 0
    raise typer.Exit(0 if healthy else 1)


if __name__ == "__main__":
    app()

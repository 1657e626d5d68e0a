"""``cardless audit`` and ``cardless audit order ORDER_ID``: the wiring around :mod:`cardless.audit`.

Exit codes: 0 no violation, 1 at least one violation (or, for ``order``, a failed step), 2 the audit
could not run (node, escrow, state or receipts file). Results go to stdout (a table, or one JSON object
with ``--json``); the progress bar and notes go to stderr.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from web3 import HTTPProvider, Web3

from cardless.audit import (
    DEFAULT_PAGE_BLOCKS,
    AuditError,
    Auditor,
    AuditReport,
    AuditState,
    ChainReader,
    StateFileError,
    check_receipts,
    load_receipts,
)
from cardless.protocol.chains import PROFILES

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Verify every order and every wei of an escrow from chain data alone.")
_err = Console(stderr=True)

Rpc = Annotated[
    str | None, typer.Option("--rpc", help="JSON-RPC URL of a node (an archive node for old blocks)")
]
Escrow = Annotated[str | None, typer.Option("--escrow", help="The escrow's address")]
FromBlock = Annotated[int, typer.Option("--from-block", min=0, help="First block (the escrow's deployment)")]
ToBlock = Annotated[str, typer.Option("--to-block", help="Last block: a number, 'latest' or 'finalized'")]
Receipts = Annotated[Path | None, typer.Option("--receipts", help="Receipts to recompute (docs/audit.md)")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object")]


def _reader(rpc: str, page_blocks: int | None) -> ChainReader:
    """``--page-blocks``, else the chain profile's ``max_log_range`` (cardless.protocol.chains), or 2,000."""
    reader = ChainReader(Web3(HTTPProvider(rpc, request_kwargs={"timeout": 60})))
    if page_blocks is None:
        profile = PROFILES.get(reader.chain_id())
        page_blocks = profile.max_log_range if profile else DEFAULT_PAGE_BLOCKS
    reader.page_blocks = page_blocks
    return reader


def _to_block(reader: ChainReader, value: str) -> int:
    if value.isdigit():
        return int(value)
    if value in ("latest", "finalized", "safe"):
        return reader.block_number(value)
    raise typer.BadParameter("a block number, 'latest' or 'finalized'", param_hint="--to-block")


def _load_state(path: Path | None) -> AuditState | None:
    if path is None or not path.exists():
        return None
    try:
        return AuditState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateFileError(f"{path}: {exc}") from exc


def _save_state(path: Path, state: AuditState) -> None:
    """Written beside the target and renamed over it, so an interrupted save leaves the old state."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(state.as_json(), out)
    os.replace(tmp, path)


def _require(value: str | None, option: str) -> str:
    if not value:
        raise typer.BadParameter("required", param_hint=option)
    return value


def _summary(report: AuditReport) -> None:
    doc = report.as_json()
    out = Console(width=160)
    table = Table(
        title=f"cardless audit: escrow {doc['escrow']} (protocol v{doc['protocol_version']}), "
        f"blocks {doc['from_block']}..{doc['to_block']}"
    )
    table.add_column("token")
    for column in ("paid", "settled", "fees earned", "refunded", "reclaimed", "open", "owed", "surplus"):
        table.add_column(column, justify="right")
    for token, books in doc["tokens"].items():
        table.add_row(
            token,
            books["paid"],
            books["settled"],
            books["fees_earned"],
            books["refunded"],
            books["reclaimed"],
            books["open"],
            books["liabilities"],
            doc["surplus"].get(token, "0"),
        )
    out.print(table)
    out.print(
        f"orders {doc['orders']}: settled {doc['settled']}, refunded {doc['refunded']}, reclaimed "
        f"{doc['reclaimed']}, open {doc['open']} (reclaimable {doc['reclaimable']}); "
        f"{doc['rpc']['calls']} RPC calls in {doc['seconds']} s",
        highlight=False,
    )
    for note in doc["notes"]:
        _err.print(f"note: {escape(note)}", highlight=False)
    if doc["violations"]:
        violations = Table(title=f"{len(doc['violations'])} violations", title_style="bold red")
        for column in ("rule", "order", "block", "tx", "evidence"):
            violations.add_column(column, overflow="fold")
        for v in doc["violations"]:
            violations.add_row(
                v["rule"], v["order_id"] or "", str(v["block"] or ""), v["tx"] or "", v["evidence"]
            )
        out.print(violations)
    else:
        out.print("[green]no violations[/green]")


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    rpc: Rpc = None,
    escrow: Escrow = None,
    from_block: FromBlock = 0,
    to_block: ToBlock = "latest",
    receipts: Receipts = None,
    as_json: AsJson = False,
    state_file: Annotated[
        Path | None, typer.Option("--state", help="Resume from and save to this file")
    ] = None,
    page_blocks: Annotated[
        int | None, typer.Option(min=1, help="Blocks per eth_getLogs (default: the chain's profile, or 2000)")
    ] = None,
    balance_every: Annotated[int, typer.Option(min=0, help="Also reconcile balances every N blocks")] = 0,
) -> None:
    """Audit every order of an escrow: `cardless audit --rpc URL --escrow ADDRESS`."""
    if ctx.invoked_subcommand is not None:
        return
    rpc, escrow = _require(rpc, "--rpc"), _require(escrow, "--escrow")
    try:
        entries = load_receipts(receipts) if receipts else None
        reader = _reader(rpc, page_blocks)
        last = _to_block(reader, to_block)
        state = _load_state(state_file)
        with Progress(
            TextColumn("blocks"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=_err,
            transient=True,
            disable=as_json or not _err.is_terminal,
        ) as bar:
            task = bar.add_task("scan", total=None)
            auditor = Auditor(
                reader,
                escrow,
                state=state,
                balance_every=balance_every,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            report = auditor.run(from_block, last)
        if entries is not None:
            check_receipts(report.state, entries)
        if state_file is not None:
            _save_state(state_file, report.state)
    except AuditError as exc:
        _err.print(f"[red]audit failed:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if as_json:
        doc = report.as_json()
        if entries is not None:
            doc["receipts_checked"] = len(entries)
        print(json.dumps(doc))
    else:
        _summary(report)
    raise typer.Exit(1 if report.state.violations else 0)


@audit_app.command("order")
def audit_order(
    order_id: Annotated[str, typer.Argument(help="0x-prefixed 32-byte order id")],
    rpc: Rpc = None,
    escrow: Escrow = None,
    from_block: FromBlock = 0,
    to_block: ToBlock = "latest",
    receipts: Receipts = None,
    as_json: AsJson = False,
) -> None:
    """One order explained step by step: event, quote signer, proof, recovered signer, receipt."""
    rpc, escrow = _require(rpc, "--rpc"), _require(escrow, "--escrow")
    oid = order_id.lower()
    if len(oid) != 66 or not oid.startswith("0x"):
        raise typer.BadParameter("a 0x-prefixed 32-byte hex id", param_hint="ORDER_ID")
    try:
        reader = _reader(rpc, None)
        auditor = Auditor(reader, escrow, focus=oid, focus_only=True)
        report = auditor.run(from_block, _to_block(reader, to_block))
        steps = list(auditor.steps)
        if receipts:
            entries = [e for e in load_receipts(receipts) if str(e["order_id"]).lower() == oid]
            steps += check_receipts(report.state, entries, focus=oid)
    except AuditError as exc:
        _err.print(f"[red]audit failed:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    record = report.state.orders.get(oid)
    doc: dict[str, Any] = {
        "order_id": oid,
        "found": record is not None,
        "status": record.status if record else None,
        "reclaimable": oid in report.reclaimable,
        "order": record.as_json() if record else None,
        "steps": [s.as_json() for s in steps],
        "passed": record is not None and all(s.passed for s in steps),
    }
    if as_json:
        print(json.dumps(doc))
    else:
        out = Console(width=160)
        table = Table(
            title=f"order {oid}: {doc['status'] or 'never paid on this escrow'}"
            + (" (reclaimable)" if doc["reclaimable"] else "")
        )
        for column in ("", "step", "detail", "block", "tx"):
            table.add_column(column, overflow="fold")
        for s in steps:
            mark = "[green]passed[/green]" if s.passed else f"[red]failed[/red] {s.rule or ''}"
            table.add_row(mark, s.step, escape(s.detail), str(s.block or ""), s.tx or "")
        out.print(table)
    raise typer.Exit(0 if doc["passed"] else 1)

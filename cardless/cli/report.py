"""``cardless report``: the analytics figures as terminal tables, and as charts in one self-contained
HTML file (inline SVG, no script, no CDN) for the dashboard; ``--json`` prints every figure as JSON.

``cardless demo --synthetic`` uses :func:`synthetic_demo`: 30 days of generated traffic in a fresh SQLite
file, replayed through the risk engine (bursts stopped, false-hold rate), then this report over it.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cardless.ledger import analytics, create_engine_for, migrate, session_factory

__all__ = ["collect", "render_html", "report", "synthetic_demo"]

WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def collect(url: str, r: analytics.Range) -> dict[str, Any]:
    engine = create_engine_for(url)
    try:
        sessions = session_factory(engine)
        with sessions() as session:
            figures = {name: figure(session, r) for name, figure in analytics.FIGURES.items()}
    finally:
        engine.dispose()
    return {
        "since": r.since.isoformat(),
        "until": r.until.isoformat(),
        "merchant": r.merchant,
        "tz_offset_minutes": r.tz_offset_minutes,
        **figures,
    }


def _tables(console: Console, data: dict[str, Any]) -> None:
    heat = Table(title=f"Orders by weekday x hour (UTC{data['tz_offset_minutes'] / 60:+g})")
    heat.add_column("day")
    for h in range(24):
        heat.add_column(f"{h:02d}", justify="right")
    grid: dict[tuple[int, int], int] = {
        (c["weekday"], c["hour"]): c["orders"] for c in data["heatmap"]["cells"]
    }
    for d in (1, 2, 3, 4, 5, 6, 0):
        heat.add_row(WEEKDAYS[d], *(str(grid.get((d, h), "")) for h in range(24)))
    console.print(heat)
    peak = data["heatmap"]["peak"]
    if peak:
        console.print(f"peak: {WEEKDAYS[peak['weekday']]} {peak['hour']:02d}:00, {peak['orders']} orders")
    skus: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in data["sku_daily"]["rows"]:
        skus[(row["sku"], row["token"])][0] += row["orders"]
        skus[(row["sku"], row["token"])][1] += int(row["amount"])
    table = Table(title="Volume per SKU (base units)")
    for column in ("sku", "token", "orders", "amount"):
        table.add_column(column, justify="right" if column in ("orders", "amount") else "left")
    for (sku, token), (orders, amount) in sorted(skus.items()):
        table.add_row(sku, token, str(orders), str(amount))
    console.print(table)
    rep = data["repeat"]
    console.print(
        f"buyers {rep['buyers']}, repeat buyers {rep['repeat_buyers']} ({rep['repeat_rate']:.1%}), "
        f"orders {rep['orders']}"
    )
    table = Table(title="Providers")
    for column in ("provider", "attempts", "succeeded", "failed", "success", "mean s", "max s"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for p in data["providers"]["providers"]:
        rate = "" if p["success_rate"] is None else f"{p['success_rate']:.1%}"
        mean = "" if p["mean_seconds"] is None else f"{p['mean_seconds']:.2f}"
        top = "" if p["max_seconds"] is None else f"{p['max_seconds']:.2f}"
        table.add_row(
            p["provider"], str(p["attempts"]), str(p["succeeded"]), str(p["failed"]), rate, mean, top
        )
    console.print(table)
    ful = data["fulfilment"]
    if ful["orders"]:
        console.print(
            f"time to fulfil: {ful['orders']} orders, mean {ful['mean_seconds']:.1f} s, "
            f"max {ful['max_seconds']} s"
        )
    table = Table(title="Refund reasons")
    table.add_column("reason")
    table.add_column("orders", justify="right")
    for r in data["refunds"]["reasons"]:
        table.add_row(r["reason"], str(r["orders"]))
    console.print(table)


def _bars(items: list[tuple[str, float]], *, width: int = 640, bar: int = 18, unit: str = "") -> str:
    top = max((v for _, v in items), default=0) or 1
    rows = []
    for i, (label, value) in enumerate(items):
        w = int((width - 220) * value / top)
        y = i * (bar + 6)
        rows.append(
            f'<text x="0" y="{y + bar - 4}" font-size="12">{html.escape(label)}</text>'
            f'<rect x="160" y="{y}" width="{w}" height="{bar}" fill="#3b6ea8"/>'
            f'<text x="{165 + w}" y="{y + bar - 4}" font-size="12">{value:g}{unit}</text>'
        )
    height = max(len(items) * (bar + 6), bar)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{"".join(rows)}</svg>'


def _heatmap_svg(data: dict[str, Any]) -> str:
    cells = {(c["weekday"], c["hour"]): c["orders"] for c in data["heatmap"]["cells"]}
    top = max(cells.values(), default=0) or 1
    size, left, parts = 24, 40, []
    for h in range(0, 24, 3):
        parts.append(f'<text x="{left + h * size}" y="12" font-size="11">{h:02d}</text>')
    for row, d in enumerate((1, 2, 3, 4, 5, 6, 0)):
        y = 18 + row * size
        parts.append(f'<text x="0" y="{y + 16}" font-size="12">{WEEKDAYS[d]}</text>')
        for h in range(24):
            n = cells.get((d, h), 0)
            shade = int(255 - 200 * n / top)
            parts.append(
                f'<rect x="{left + h * size}" y="{y}" width="{size - 2}" height="{size - 2}" '
                f'fill="rgb({shade},{shade},255)"><title>{WEEKDAYS[d]} {h:02d}:00 {n} orders</title></rect>'
            )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + 24 * size}" height="{18 + 7 * size}">'
    return svg + "".join(parts) + "</svg>"


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render_html(data: dict[str, Any]) -> str:
    """One self-contained page: inline SVG charts and tables, no scripts, nothing fetched."""
    daily: dict[str, int] = defaultdict(int)
    for row in data["sku_daily"]["rows"]:
        daily[row["day"]] += row["orders"]
    fulfil = [
        (("< " + str(b["le_seconds"]) + " s") if b["le_seconds"] else "longer", b["orders"])
        for b in data["fulfilment"]["histogram"]
    ]
    providers = "".join(
        f"<tr><td>{html.escape(p['provider'])}</td><td>{p['attempts']}</td><td>{p['succeeded']}</td>"
        f"<td>{p['failed']}</td><td>{_fmt(p['success_rate'], '.1%')}</td>"
        f"<td>{_fmt(p['mean_seconds'], '.2f')}</td></tr>"
        for p in data["providers"]["providers"]
    )
    cohorts = "".join(
        f"<tr><td>{c['cohort']}</td><td>{c['week']}</td><td>{c['buyers']}</td></tr>"
        for c in data["cohorts"]["rows"]
    )
    rep = data["repeat"]
    peak = data["heatmap"]["peak"]
    peak_text = (
        f"{WEEKDAYS[peak['weekday']]} {peak['hour']:02d}:00 ({peak['orders']} orders)"
        if peak
        else "no orders"
    )
    title = f"Cardless report {data['since'][:10]} to {data['until'][:10]}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}h2{{margin-top:1.5em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Times at UTC{data["tz_offset_minutes"] / 60:+g}. Merchant: {html.escape(data["merchant"] or "all")}.</p>
<h2>Orders by weekday and hour</h2><p>Peak: {html.escape(peak_text)}</p>{_heatmap_svg(data)}
<h2>Orders per day</h2>{_bars(sorted(daily.items()))}
<h2>Repeat purchases</h2><p>{rep["buyers"]} buyers, {rep["repeat_buyers"]} bought twice or more
({rep["repeat_rate"]:.1%}); {rep["orders"]} orders.</p>
<h2>Wallet cohorts (weeks from the first order)</h2><table><tr><th>cohort</th><th>week</th><th>buyers</th></tr>{cohorts}</table>
<h2>Time to fulfil</h2>{_bars(fulfil)}
<h2>Providers</h2><table><tr><th>provider</th><th>attempts</th><th>succeeded</th><th>failed</th><th>success</th><th>mean s</th></tr>{providers}</table>
<h2>Refund reasons</h2>{_bars([(r["reason"], r["orders"]) for r in data["refunds"]["reasons"]])}
</body></html>
"""  # noqa: E501


def write_report(data: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "report.html"
    target.write_text(render_html(data), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return target


def report(
    days: Annotated[int, typer.Option(min=1, max=366, help="Days before now (or --until)")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as one JSON object")] = False,
    out: Annotated[Path | None, typer.Option(help="Directory for report.html and report.json")] = None,
    tz_offset_minutes: Annotated[int, typer.Option(min=-720, max=840, help="Local time = UTC + minutes")] = 0,
    merchant: Annotated[str | None, typer.Option(help="One merchant's settlement address")] = None,
    until: Annotated[str | None, typer.Option(help="End of the range, ISO 8601 (default: now)")] = None,
    database: Annotated[str | None, typer.Option(help="Database URL (default: from settings)")] = None,
) -> None:
    """Analytics of the orders: tables in the terminal, charts as one self-contained HTML file."""
    from cardless.cli.settings import Settings

    settings = Settings()
    url = database or settings.effective_database_url
    end = datetime.fromisoformat(until) if until else datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    r = analytics.Range(
        end - timedelta(days=days), end, merchant=merchant, tz_offset_minutes=tz_offset_minutes
    )
    data = collect(url, r)
    console = Console(stderr=as_json)
    if as_json:
        typer.echo(json.dumps(data, default=str))
    else:
        _tables(console, data)
    target = write_report(data, out or settings.var_dir / "reports")
    console.print(f"charts written to {target}")


def synthetic_demo(
    directory: Path,
    *,
    days: int = 30,
    orders_per_day: float = 150.0,
    seed: int = 14,
    tz_offset_minutes: int = 480,
) -> dict[str, Any]:
    """Generate ``days`` of traffic into a fresh SQLite file under ``directory``, replay it through the
    risk engine, write the report there; returns the replay's numbers and the heatmap peak."""
    from cardless.ledger.cipher import AccountCipher
    from cardless.ledger.risk import RiskEngine
    from cardless.ledger.risk.replay import replay
    from cardless.ledger.synthetic import SyntheticConfig, generate, load

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "synthetic.db"
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    config = SyntheticConfig(
        days=days, orders_per_day=orders_per_day, seed=seed, tz_offset_minutes=tz_offset_minutes
    )
    data = generate(config, AccountCipher(bytes(32)))
    engine = create_engine_for(url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            load(session, data)
        with sessions.begin() as session:
            result = replay(session, RiskEngine(), data.fraud)
    finally:
        engine.dispose()
    r = analytics.Range(
        config.start, config.start + timedelta(days=days), tz_offset_minutes=tz_offset_minutes
    )
    figures = collect(url, r)
    target = write_report(figures, directory)
    return {"risk": result.as_dict(), "peak": figures["heatmap"]["peak"], "report": str(target)}

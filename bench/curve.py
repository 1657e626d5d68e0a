"""How the end-to-end figures scale with the number of orders (issue 12): ``bench.e2e`` phases a and bmax
(the node's raw rate, the oracle at saturation) at N = 100, 1,000 and 10,000 on anvil.

    PYTHONPATH=. python -m bench.curve [--orders 100,1000,10000] [--phases a,bmax]
        -> bench/results/e2e-curve.json (and e2e-n100.json, e2e-n1000.json, e2e-n10000.json)

Each N is its own ``bench.e2e`` run (fresh systems), written whole to a file of its own beside the
curve (an older file of that N is replaced, not merged: its other phases would be another code's).
The curve keeps, per N: the raw pay rate, settled/s, the ratio, p50/p95/p99 of paid -> settled, the
oracle's CPU per order and the load during each phase.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench import e2e
from bench.loadgen import load_info

KEYS = ("raw_pay_tps", "settled_tps", "p50_ms", "p95_ms", "p99_ms", "oracle_cpu_ms_per_order", "settled")


def point(report: dict[str, Any]) -> dict[str, Any]:
    phases = report["phases"]
    raw = phases.get("a", {}).get("raw_pay_tps")
    sat = phases.get("bmax", {})
    row: dict[str, Any] = {"orders": report["orders"], "raw_pay_tps": raw}
    row.update({key: sat.get(key) for key in KEYS if key != "raw_pay_tps"})
    row["pays_offered_tps_bmax"] = sat.get("raw_pay_tps")
    row["ratio"] = round(sat["settled_tps"] / raw, 3) if raw and sat.get("settled_tps") else None
    row["load_a"] = phases.get("a", {}).get("load_during", {}).get("loadavg_1m")
    row["load_bmax"] = sat.get("load_during", {}).get("loadavg_1m")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.curve")
    parser.add_argument("--orders", default="100,1000,10000")
    parser.add_argument("--phases", default="a,bmax")
    parser.add_argument(
        "--run", help="the N to run now (default: all); the others are read from their e2e-n<N>.json"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=e2e.RESULTS / "e2e-curve.json")
    args = parser.parse_args(argv)
    points = []
    run = {int(x) for x in (args.run or args.orders).split(",")}
    for n in [int(x) for x in args.orders.split(",")]:
        out = args.out.with_name(f"e2e-n{n}.json")
        if n not in run:
            points.append(point(json.loads(out.read_text())))
            continue
        out.unlink(missing_ok=True)
        e2e.main(
            ["--orders", str(n), "--phases", args.phases, "--timeout", str(args.timeout), "--out", str(out)]
        )
        points.append(point(json.loads(out.read_text())))
    curve = {"chain": "anvil", "phases": args.phases, "load": load_info(), "points": points}
    args.out.write_text(json.dumps(curve, indent=2) + "\n")
    print(f"{'N':>7}{'raw pay/s':>11}{'settled/s':>11}{'ratio':>7}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms':>8}")
    for p in points:
        print(
            f"{p['orders']:>7}{p['raw_pay_tps']!s:>11}{p['settled_tps']!s:>11}{p['ratio']!s:>7}"
            f"{p['p50_ms']!s:>10}{p['p99_ms']!s:>10}{p['oracle_cpu_ms_per_order']!s:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sum py-spy's collapsed stacks (``-f raw``) by component and by own-time function.

    python -m bench.profile FILE [--top 25]

A sample counts once for the first component found walking the stack from its innermost frame
outwards, so nested libraries are charged to the innermost one that matches (web3 over httpx, and so on).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

__all__ = ["COMPONENTS", "summarise"]

# (name, path fragments) — first match from the innermost frame wins.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("py-evm / eth-tester (chain execution)", ("/eth/", "/eth_tester/", "/trie/", "/rlp/")),
    ("dev node JSON-RPC", ("/cardless/devchain/",)),
    ("eth-account / eth-keys signing", ("/eth_account/", "/eth_keys/", "/coincurve/")),
    ("EIP-712 / protocol", ("/cardless/protocol/",)),
    ("web3 client", ("/web3/", "/eth_abi/", "/eth_utils/", "/Crypto/", "/eth_hash/")),
    ("SQLAlchemy / sqlite", ("/sqlalchemy/", "/sqlite3/", "/psycopg/")),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("httpx / httpcore", ("/httpx/", "/httpcore/", "/h11/", "/requests/", "/urllib3/", "/http/client")),
    ("uvicorn / starlette / fastapi", ("/uvicorn/", "/starlette/", "/fastapi/", "/anyio/")),
    ("simulator", ("/adapters/simulator/",)),
    ("adapters", ("/adapters/",)),
    ("gateway", ("/gateway/",)),
    ("oracle", ("/oracles/",)),
    ("asyncio / selectors", ("/asyncio/", "/selectors", "/uvloop/", "/threading")),
)


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        where = "/" + frame[frame.rfind("(") + 1 :]  # py-spy prints paths relative to sys.path
        for name, fragments in COMPONENTS:
            if any(f in where for f in fragments):
                return name
    return "other"


def summarise(text: str, top: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    by_component: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        by_component[_component(frames)] += n
        by_function[frames[-1]] += n
    return total, by_component.most_common(), by_function.most_common(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    total, components, functions = summarise(args.file.read_text(), args.top)
    print(f"{total} samples")
    for name, n in components:
        print(f"{100 * n / total:6.1f} %  {name}")
    print("own time:")
    for name, n in functions:
        print(f"{100 * n / total:6.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

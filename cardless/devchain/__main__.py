"""``python -m cardless.devchain``: the py-evm dev node served over JSON-RPC, in the foreground.

``cardless run`` and ``cardless demo`` start it as a child process (``cardless.cli.embedded``), so the
chain's CPU does not wait for the GIL of the process that runs the gateway. ``--port 0`` (the default)
binds a free port; ``--ws`` also serves ``eth_subscribe newHeads`` over WebSocket on a free port
(:mod:`cardless.devchain.heads`); ``--announce`` prints ``port N`` (``port N ws M``) on stdout once the
node answers (stdout then goes to stderr), for the parent to read back. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from cardless.devchain.node import DEFAULT_HOST, DevNode
from cardless.protocol.jsonlimits import restore_recursion_limit


def main(argv: list[str] | None = None) -> None:
    restore_recursion_limit()  # py_ecc (through eth_account) set it to 100,000
    parser = argparse.ArgumentParser(prog="python -m cardless.devchain", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ws", action="store_true", help="serve newHeads over WebSocket on a free port")
    parser.add_argument("--announce", action="store_true", help="print `port N [ws M]` once serving")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = DevNode(args.host, args.port).start()
    try:
        ws = node.serve_heads() if args.ws else ""
        if args.announce:
            port = node.url.rpartition(":")[2]
            line = f"port {port}" + (f" ws {ws.rpartition(':')[2]}" if ws else "")
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        stop.wait()
    finally:
        node.stop()


if __name__ == "__main__":
    main()

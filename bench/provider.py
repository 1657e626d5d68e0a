"""The simulated provider in a process of its own, for the benches (issue 12).

    PYTHONPATH=. python -m bench.provider [--latency-ms MS]

A real provider is another server: run in the bench's process, the simulator shared one GIL with the
gateway and the bench's own polling, and its replies took 300 ms to 1 s under load (docs/benchmarks.md).
This serves the bench's configuration (stock and balances for 10,000 orders and more) on a free port
of 127.0.0.1 and prints ``port N`` once it listens; SIGTERM stops it. :class:`ProviderProcess` starts it
and has the ``url`` and ``stop()`` the system expects of its simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def bench_simulator_config() -> Any:
    """The default simulated provider with stock and balances for 10,000 orders and more."""
    from adapters.simulator.config import default_config

    config = default_config()
    return config.model_copy(
        update={
            "merchants": tuple(m.model_copy(update={"balance_cents": 10**9}) for m in config.merchants),
            "skus": tuple(s.model_copy(update={"stock": 10**7}) if s.stock else s for s in config.skus),
        }
    )


class ProviderProcess:
    """``python -m bench.provider`` as a child process: ``url`` once started, ``stop()`` ends it."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 30) -> ProviderProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.provider"],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_path.read_bytes().splitlines():
                if line.startswith(b"port "):
                    self.url = f"http://127.0.0.1:{int(line.split()[1])}"
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulated provider did not start; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def main(argv: list[str] | None = None) -> None:
    from adapters.simulator.app import create_app
    from adapters.simulator.server import _bind, _uvicorn_server
    from cardless.protocol.jsonlimits import restore_recursion_limit

    restore_recursion_limit()
    parser = argparse.ArgumentParser(prog="python -m bench.provider")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    app = create_app(bench_simulator_config())
    sock = _bind("127.0.0.1", args.port)
    sock.listen(2048)  # before the port is announced: nothing is refused while uvicorn starts
    port = int(sock.getsockname()[1])
    server = _uvicorn_server(app, "127.0.0.1", port, "warning")
    # uvicorn handles SIGTERM (should_exit); connections made before it serves wait in the backlog.
    sys.stdout.write(f"port {port}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


if __name__ == "__main__":
    main()

"""Serving the simulated provider: `SimulatorServer` (a background thread, for tests and the embedded
system) and `main()` (`python -m adapters.simulator`, in the foreground)."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from adapters.simulator.app import SimulatorRuntime, create_app
from adapters.simulator.config import SimulatorConfig, default_config, load_config

__all__ = ["CONFIG_ENV", "DEFAULT_HOST", "DEFAULT_PORT", "SimulatorServer", "main"]

CONFIG_ENV = "CARDLESS_SIMULATOR_CONFIG"
"""A whole ``SimulatorConfig`` as JSON, for a parent that starts the simulator as its child process."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8601
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def _bind(host: str, port: int) -> socket.socket:
    # proto must say TCP: asyncio only sets TCP_NODELAY on sockets that do, and without it every reply
    # (headers and body are separate writes) waits ~40 ms for a delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_server(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # h11 everywhere, so lost replies behave the same whether or not httptools is installed.
        http="h11",
        lifespan="on",
        # Bounded wait for in-flight requests at stop (held ones are released by `closing` anyway).
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    runtime: SimulatorRuntime = app.state.runtime

    def drop_connection(client: tuple[str, int]) -> bool:
        # uvicorn keeps its live connections (protocol objects with `client` and `transport`); aborting the
        # socket before any byte is written is the closest thing to a reply lost on the wire.
        for connection in list(server.server_state.connections):
            if getattr(connection, "client", None) == client:
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
                    return True
        return False

    runtime.drop_connection = drop_connection
    return server


class SimulatorServer:
    """The simulated provider on a real socket, served from a background thread.

    >>> with SimulatorServer() as sim:  # doctest: +SKIP
    ...     httpx.get(f"{sim.url}/_sim/ledger")
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        log_level: str = "warning",
    ) -> None:
        self.config = config or default_config()
        self.app = create_app(self.config)
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    @property
    def runtime(self) -> SimulatorRuntime:
        runtime: SimulatorRuntime = self.app.state.runtime
        return runtime

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("simulator is not running")
        return self._bound_port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        # Bind here rather than in uvicorn so port 0 yields the real port before the thread runs.
        sock = _bind(self._host, self._port)
        self._bound_port = int(sock.getsockname()[1])
        server = _uvicorn_server(self.app, self._host, self._bound_port, self._log_level)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"simulator:{self._bound_port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"simulator did not start on {self._host}:{self._bound_port}")
            time.sleep(0.01)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.runtime.closing.set()
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_S)
        self._server = self._thread = None
        self._bound_port = None

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve the simulated provider in the foreground until interrupted (SIGINT or SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m adapters.simulator", description=main.__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: one the OS picks (see --announce)")
    parser.add_argument("--config", help="TOML file (see adapters/simulator/config.py); default built in")
    parser.add_argument(
        "--async", dest="async_mode", action="store_true", help="reply PROCESSING, then call back"
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--announce",
        action="store_true",
        help="once listening, print `port N` on stdout (then stdout goes to stderr): for a parent process",
    )
    args = parser.parse_args(argv)
    if args.config:
        config = load_config(args.config)
    elif os.environ.get(CONFIG_ENV):
        config = SimulatorConfig.model_validate_json(os.environ[CONFIG_ENV])
    else:
        config = default_config()
    if args.async_mode:
        config = config.model_copy(update={"async_mode": True})
    app = create_app(config)
    sock = _bind(args.host, args.port)
    port = int(sock.getsockname()[1])
    server = _uvicorn_server(app, args.host, port, args.log_level)
    if args.announce:
        # Listening before the port is announced: a request sent at once waits in the backlog while
        # uvicorn starts, rather than being refused.
        sock.listen(2048)
        sys.stdout.write(f"port {port}\n")
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])

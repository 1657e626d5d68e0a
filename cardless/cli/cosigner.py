"""The ``cardless cosigner`` command (the service itself: ``oracles.cosigner``; its HTTP serving:
``cardless.cli.cosigner_server``, imported only when the command runs)."""

from __future__ import annotations

import signal
import threading

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cardless.cli.settings import Settings

__all__ = ["cosigner"]

console = Console(stderr=True, width=200)


def cosigner() -> None:
    """Serve the co-signer: a second oracle proof key, in this process only, that signs a settlement or a
    refund only after checking it against the chain and the provider (docs/operations/cosigner.md).

    Listens on CARDLESS_COSIGNER_HOST:CARDLESS_COSIGNER_PORT; the oracle lists it in CARDLESS_COSIGNER_URLS
    and both share CARDLESS_COSIGNER_SECRET_FILE."""
    from cardless.cli.cosigner_server import server_from_settings
    from cardless.cli.main import _logging

    _logging()
    try:
        settings = Settings()
        server = server_from_settings(settings)
        url = server.start()
    except Exception as exc:
        message = str(exc)
        if isinstance(exc, ValidationError):
            from cardless.cli.main import _settings_problem

            message = _settings_problem(exc)
        console.print(f"[red]start-up failed:[/red] {escape(message)}", soft_wrap=True)
        raise typer.Exit(1) from exc
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        console.print(f"cosigner running: {url} (signer {server.signer})", soft_wrap=True, highlight=False)
        stop.wait()
    finally:
        server.stop()

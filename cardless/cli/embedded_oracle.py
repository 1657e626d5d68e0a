"""The embedded system's oracle worker as a child process of `cardless run` and `cardless demo`.

What ``cardless oracle`` is in production: ``System(embedded=False, gateway=False)`` against the node's
JSON-RPC, the deployment file and the database (here the embedded system's SQLite file), started by
``cardless run``/``cardless demo`` under :mod:`cardless.cli.child` so it never outlives them. The parent
passes its settings as ``CARDLESS_*`` variables (:func:`settings_environment`), with the node, the
simulated provider and the gateway (for callbacks) named by URL.

    python -m cardless.cli.child cardless.cli.embedded_oracle [--log-level WARNING]

It announces ``oracle running`` on stdout once it works and handles SIGTERM, and stops on SIGTERM or
SIGINT (finishing the provider calls it started, as ``cardless oracle`` does).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from cardless.cli.settings import Settings

__all__ = ["READY", "main", "settings_environment"]

READY = "oracle running"


def settings_environment(settings: Settings, **overrides: Any) -> dict[str, str]:
    """``settings`` (with ``overrides``) as the ``CARDLESS_*`` variables that rebuild them in a child."""
    values = {name: getattr(settings, name) for name in type(settings).model_fields} | overrides
    env: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool | int | float) or hasattr(value, "__fspath__"):
            text = json.dumps(value) if isinstance(value, bool) else str(value)
        else:
            text = json.dumps(value, default=str)
        env[f"CARDLESS_{name.upper()}"] = text
    return env


def main(argv: Sequence[str] | None = None) -> None:
    from cardless.cli.child import announce
    from cardless.cli.main import _logging
    from cardless.cli.system import System

    parser = argparse.ArgumentParser(prog="python -m cardless.cli.embedded_oracle")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    _logging(args.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    system = System(Settings(), embedded=False, gateway=False, oracle=True)
    try:
        system.start()
        announce(READY)
        stop.wait()
    finally:
        system.stop()


if __name__ == "__main__":
    main()

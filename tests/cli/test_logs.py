"""JSON log lines (``cardless.cli.logs.JsonFormatter``): one object per line, the order id from the
context the code set (``cardless.ledger.logcontext``) or from ``extra=``, null otherwise; exceptions
included; asyncio tasks keep their own order."""

from __future__ import annotations

import asyncio
import json
import logging

from cardless.cli.logs import JsonFormatter
from cardless.cli.settings import Settings
from cardless.ledger.logcontext import ORDER_ID, order_scope

ORDER = "0x" + "ab" * 32
OTHER = "0x" + "cd" * 32


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def _logger() -> tuple[logging.Logger, _Lines]:
    logger = logging.getLogger("tests.cli.logs")
    logger.handlers.clear()
    lines = _Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, lines


def test_every_line_is_json_with_the_order_id_of_its_context() -> None:
    logger, lines = _logger()
    logger.info("no order here")
    with order_scope(ORDER):
        logger.warning("provider answered %s", "timeout")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("step failed")
    logger.info("named explicitly", extra={"order_id": OTHER})
    assert [line["order_id"] for line in lines.lines] == [None, ORDER, ORDER, OTHER]
    assert lines.lines[1]["message"] == "provider answered timeout"
    assert lines.lines[1]["level"] == "WARNING" and lines.lines[1]["logger"] == "tests.cli.logs"
    assert str(lines.lines[1]["ts"]).endswith("Z")
    assert "ValueError: boom" in str(lines.lines[2]["exc"])
    assert ORDER_ID.get() is None


def test_concurrent_tasks_each_log_their_own_order() -> None:
    logger, lines = _logger()

    async def step(order_id: str) -> None:
        ORDER_ID.set(order_id)  # as the oracle's provider step does, in its own task
        await asyncio.sleep(0)
        logger.info("step")

    async def main() -> None:
        await asyncio.gather(step(ORDER), step(OTHER))
        logger.info("after")

    asyncio.run(main())
    assert sorted(str(line["order_id"]) for line in lines.lines[:2]) == sorted([ORDER, OTHER])
    assert lines.lines[2]["order_id"] is None


def test_json_is_the_default_outside_development() -> None:
    assert Settings(environment="development").effective_log_format == "text"
    assert Settings(environment="development", log_format="json").effective_log_format == "json"
    assert Settings(environment="production").effective_log_format == "json"


def test_development_logs_to_a_pipe_are_plain_unwrapped_lines() -> None:
    """Off a terminal (a child of `cardless run`, a bench, a service manager) a development log line is
    one plain line: no Rich columns, colours or wrapping (which also cost the oracle CPU per order)."""
    import subprocess
    import sys

    words = " ".join(f"order{i}" for i in range(60))  # ~470 characters: Rich wraps at 200 off a terminal
    code = (
        "import logging; from cardless.cli.main import _logging; _logging(json_lines=False); "
        f"logging.getLogger('cardless').info('claimed %s', {words!r})"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith(f" INFO cardless: claimed {words}")
    assert "\x1b[" not in done.stderr

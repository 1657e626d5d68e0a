"""Log output: readable lines on a terminal, or one JSON object per line for a log pipeline.

``CARDLESS_LOG_FORMAT=json`` (the default outside development) writes every record as::

    {"ts": "2026-12-03T12:00:00.123Z", "level": "INFO", "logger": "oracles.settlement",
     "message": "...", "order_id": "0x…" | null, "exc": "Traceback…"?}

``order_id`` is the order the code was working on (``cardless.ledger.logcontext``), or an ``order_id``
passed in ``extra=``; the key is on every line so a query by order never misses a line for lack of it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from cardless.ledger.logcontext import ORDER_ID

__all__ = ["JsonFormatter"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "order_id": getattr(record, "order_id", None) or ORDER_ID.get(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)

"""The address screening list: a text file of wallet addresses (one a line, ``#`` comments), loaded at
start and reloaded when its modification time changes (checked at most every ``check_every`` seconds)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

__all__ = ["ScreeningList", "parse_screening"]


def parse_screening(text: str) -> frozenset[str]:
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        body = entry.removeprefix("0x").removeprefix("0X")
        if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
            raise ValueError(f"screening list line {number}: {entry!r} is not an address")
        found.add("0x" + body.lower())
    return frozenset(found)


class ScreeningList:
    def __init__(
        self, path: Path | None = None, *, addresses: frozenset[str] = frozenset(), check_every: float = 5.0
    ):
        self.path = path
        self.check_every = check_every
        self._addresses = frozenset(a.lower() for a in addresses)
        self._mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if path is not None:
            self._reload(force=True)

    def _reload(self, *, force: bool = False) -> None:
        assert self.path is not None
        now = time.monotonic()
        if not force and now - self._checked < self.check_every:
            return
        self._checked = now
        mtime = self.path.stat().st_mtime
        if force or mtime != self._mtime:
            # A malformed new file raises here: the old list stays in force until it is fixed.
            addresses = parse_screening(self.path.read_text())
            with self._lock:
                self._addresses, self._mtime = addresses, mtime

    def __contains__(self, address: object) -> bool:
        if self.path is not None:
            # A missing or malformed file keeps the last good list; the next start reports it.
            with contextlib.suppress(OSError, ValueError):
                self._reload()
        return isinstance(address, str) and address.lower() in self._addresses

    def __len__(self) -> int:
        return len(self._addresses)

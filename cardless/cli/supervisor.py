"""Keeps the embedded system's child processes running: ``cardless run`` and ``cardless demo``.

Each child (``cardless.cli.child``) has a thread of its own here, blocked in ``wait()`` on it (no
polling). A child that exits while the system is not stopping is logged (its name, pid, exit code or
signal, how long it ran, the last lines of its stderr) and then either

- **restarted** (the oracle worker, the simulated provider): after a back-off that starts at
  ``first_delay`` and doubles to ``max_delay``, back to ``first_delay`` once a child has run
  ``stable_after`` seconds; a child that fails more than ``max_restarts`` times within ``window``
  seconds (a start that fails counts) is given up on, and the system halts; or
- **not replaced** (the py-evm node, anvil): its state lives in its memory, and a new one would give the
  gateway, the oracle and the database a different chain. The system halts.

Halting is ``on_fatal(message)``: the owner (``System``) records the message and stops; ``cardless
run`` then exits non-zero with it. :meth:`Supervisor.states` (``running``, ``restarting``, ``down``)
is what /v1/health shows of the children.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

from cardless.cli.child import ChildProcess, describe_exit

__all__ = ["ChildState", "Handle", "RestartPolicy", "Supervisor"]

log = logging.getLogger("cardless.supervisor")

ChildState = Literal["running", "restarting", "down"]


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    """Seconds before the first restart; doubled at each failure that follows."""
    max_delay: float = 30.0
    stable_after: float = 60.0
    """A child that ran this long before it exited starts again at ``first_delay``."""
    max_restarts: int = 5
    """More failures than this within ``window`` seconds: given up on, the system halts. 0: never
    restart (any unexpected exit halts the system)."""
    window: float = 120.0


class Handle(Protocol):
    """What the system holds for a child: ``DevNodeProcess``, ``SimulatorProcess``, an oracle process."""

    def stop(self) -> object: ...


H = TypeVar("H", bound=Handle)


@dataclasses.dataclass(eq=False)
class _Entry:
    name: str
    label: str
    handle: Any
    process: Callable[[Any], subprocess.Popen[bytes] | None]
    child: Callable[[Any], ChildProcess | None]
    spawn: Callable[[], Any] | None
    ready: Callable[[Any], object] | None
    replaced: Callable[[Any], None] | None
    irreplaceable: str
    state: ChildState = "running"
    started: float = dataclasses.field(default_factory=time.monotonic)
    delay: float = 0.0
    failures: list[float] = dataclasses.field(default_factory=list)
    restarts: int = 0
    starting: Any = None
    thread: threading.Thread | None = None


class Supervisor:
    def __init__(self, policy: RestartPolicy, on_fatal: Callable[[str], None]) -> None:
        self.policy = policy
        self._on_fatal = on_fatal
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def watch(
        self,
        name: str,
        handle: H,
        *,
        child: Callable[[H], ChildProcess | None],
        process: Callable[[H], subprocess.Popen[bytes] | None] | None = None,
        spawn: Callable[[], H] | None = None,
        ready: Callable[[H], object] | None = None,
        replaced: Callable[[H], None] | None = None,
        irreplaceable: str = "",
        label: str = "",
    ) -> None:
        """Watch ``handle``'s process from now on. ``spawn`` starts a replacement without waiting for it,
        ``ready`` waits until it works (raising if it does not), ``replaced`` hands the working one to the
        owner; without ``spawn`` the child is irreplaceable (``irreplaceable`` says why). ``name`` is its key
        in :meth:`states`, ``label`` what the log calls it (default: the child's own name)."""

        def process_of(h: H) -> subprocess.Popen[bytes] | None:
            c = child(h)
            return c.process if c is not None else None

        first = child(handle)
        entry = _Entry(
            name=name,
            label=label or (first.name if first is not None else name),
            handle=handle,
            process=process or process_of,
            child=child,
            spawn=spawn,
            ready=ready,
            replaced=replaced,
            irreplaceable=irreplaceable,
            delay=self.policy.first_delay,
        )
        self._entries[name] = entry
        entry.thread = threading.Thread(
            target=self._watch, args=(entry,), name=f"supervise {name}", daemon=True
        )
        entry.thread.start()

    def states(self) -> dict[str, ChildState]:
        return {name: entry.state for name, entry in self._entries.items()}

    def restarts(self) -> dict[str, int]:
        return {name: entry.restarts for name, entry in self._entries.items()}

    def stop(self, timeout: float = 15.0) -> None:
        """Stop watching (before the owner stops the children on purpose): no restart begins after this,
        a replacement still starting is stopped, and the threads that were restarting are joined (the
        others wait on a child the owner now stops, and end then)."""
        with self._lock:
            self._stopping.set()
            entries = list(self._entries.values())
            starting = [e.starting for e in entries if e.starting is not None]
        for handle in starting:
            handle.stop()
        deadline = time.monotonic() + timeout
        for entry in entries:
            thread = entry.thread
            restarting = entry.state == "restarting" and thread is not None
            if restarting and thread is not threading.current_thread():
                assert thread is not None
                thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ the watching threads

    def _watch(self, entry: _Entry) -> None:
        try:
            self._watch_until_stopped(entry)
        except Exception as exc:  # a bug here must not leave a child unwatched without a word
            log.exception("supervising %s failed", entry.label)
            entry.state = "down"
            self._fatal(f"supervising {entry.label} failed ({type(exc).__name__}: {exc})")

    def _watch_until_stopped(self, entry: _Entry) -> None:
        while not self._stopping.is_set():
            process = entry.process(entry.handle)
            if process is None:
                return
            code = process.wait()  # blocks this thread only; stop() on purpose ends it too
            if self._stopping.is_set():
                return
            ran = time.monotonic() - entry.started
            child = entry.child(entry.handle)
            tail = child.stderr_tail() if child is not None else []
            what = describe_exit(code)
            log.error(
                "%s (pid %d) %s after %.1f s%s",
                entry.label,
                process.pid,
                what,
                ran,
                "; its last lines:\n  " + "\n  ".join(tail) if tail else "",
            )
            if entry.spawn is None or entry.ready is None or self.policy.max_restarts <= 0:
                entry.state = "down"
                why = entry.irreplaceable or "restarts are off"
                self._fatal(f"{entry.label} {what} and is not restarted: {why}")
                return
            if ran >= self.policy.stable_after:
                entry.delay = self.policy.first_delay
            if not self._restart(entry, what):
                return

    def _restart(self, entry: _Entry, what: str) -> bool:
        """Start a replacement, with back-off, until one works (True) or the system gives up (False)."""
        assert entry.spawn is not None and entry.ready is not None
        entry.state = "restarting"
        entry.handle.stop()  # reap the dead process, close its pipes
        policy = self.policy
        while True:
            now = time.monotonic()
            entry.failures = [t for t in entry.failures if now - t < policy.window] + [now]
            if len(entry.failures) > policy.max_restarts:
                entry.state = "down"
                self._fatal(
                    f"{entry.label} failed {len(entry.failures)} times in {policy.window:.0f} s "
                    f"(the last time it {what}); giving up"
                )
                return False
            delay, entry.delay = entry.delay, min(entry.delay * 2, policy.max_delay)
            log.warning(
                "restarting %s in %.3g s (failure %d of at most %d in %.0f s)",
                entry.label,
                delay,
                len(entry.failures),
                policy.max_restarts,
                policy.window,
            )
            if self._stopping.wait(delay):
                return False
            with self._lock:
                if self._stopping.is_set():
                    return False
                try:
                    handle = entry.spawn()
                except Exception as exc:  # counted as a failure, like any other
                    what = f"could not be started ({exc})"
                    log.error("%s %s", entry.label, what)
                    continue
                entry.starting = handle
            try:
                entry.ready(handle)
            except Exception as exc:  # ChildStartError, or whatever its check raised
                with self._lock:
                    entry.starting = None
                handle.stop()
                if self._stopping.is_set():
                    return False
                what = f"did not start again ({exc})"
                log.error("%s %s", entry.label, what)
                continue
            with self._lock:
                entry.starting = None
                if self._stopping.is_set():
                    handle.stop()
                    return False
                entry.handle = handle
                entry.started = time.monotonic()
                entry.restarts += 1
                entry.state = "running"
                if entry.replaced is not None:
                    entry.replaced(handle)
            process = entry.process(handle)
            log.warning("%s restarted (pid %s)", entry.label, process.pid if process is not None else "?")
            return True

    def _fatal(self, message: str) -> None:
        log.critical("%s: the system stops", message)
        self._on_fatal(message)

"""Child processes of ``cardless run`` and ``cardless demo``: started, announced, stopped, never orphaned.

``cardless run`` and ``cardless demo`` (``System(children=True)``) run the py-evm node, the simulated
provider and the oracle worker as processes of their own, as every real deployment does: a provider
is another server, and ``cardless oracle`` is its own process in production. They then use the
machine's other core instead of waiting for the GIL of the process that runs the gateway.

How a child is kept from outliving its parent, however the parent ends:

- **stopped on purpose** (``stop()``, from ``System.stop`` on Ctrl-C, SIGTERM or an error): SIGTERM,
  a bounded wait for the child to finish what it started, then SIGKILL, and always ``wait()``;
- **the parent dies** (SIGKILL, a crash, the OOM killer): each child runs under
  ``python -m cardless.cli.child MODULE ARGS...``, which holds the read end of a pipe whose only write
  end the parent holds (stdin). The kernel closes that end when the parent dies, however it dies; the
  child reads end of file and sends itself SIGTERM (its normal, graceful stop), then exits by force if
  that has not ended it within ``_ORPHAN_GRACE_S``;
- **Ctrl-C in a terminal**: children run in a session of their own, so the terminal's SIGINT reaches
  only the parent, which stops them in order (the oracle before the provider it calls).

A child announces itself with one line on stdout (for a server: ``port N``, the port the OS picked,
read back rather than guessed); its stdout is its stderr afterwards. Its stderr is a pipe the parent
copies to its own stderr as it comes, keeping the last few KiB (:meth:`ChildProcess.stderr_tail`), so a
child that dies is reported with its last words (``cardless.cli.supervisor`` restarts or gives up).
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

__all__ = ["ChildProcess", "ChildStartError", "announce", "describe_exit"]

_ORPHAN_GRACE_S = 10.0
_TAIL_BYTES = 4096


class ChildStartError(RuntimeError):
    """A child did not start (exited, or did not announce itself in time)."""


def announce(line: str) -> None:
    """Called by a child once it is ready: ``line`` to the parent, then stdout goes to stderr."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def describe_exit(code: int | None) -> str:
    """``exited with 3``, ``was killed by SIGKILL`` (Popen's negative return code), ``is running``."""
    if code is None:
        return "is running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


class ChildProcess:
    """``python -m cardless.cli.child MODULE ARGS...``: ``start()`` returns its announced line."""

    def __init__(
        self, name: str, module: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.command = [sys.executable, "-m", "cardless.cli.child", module, *args]
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_line = ""
        self._tail = bytearray()
        self._tee: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self) -> ChildProcess:
        """Start the process without waiting for it (``ready()`` waits): several children, or a child
        and the parent's own start-up, then overlap."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} already started")
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,  # the lifeline: nothing is ever written to it
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # copied through to ours by _copy_stderr, its tail kept
            env=self.env,
            start_new_session=True,
        )
        assert self.process.stderr is not None
        self._tail.clear()
        self._tee = threading.Thread(
            target=self._copy_stderr, args=(self.process.stderr,), name=f"stderr of {self.name}", daemon=True
        )
        self._tee.start()
        return self

    def _copy_stderr(self, pipe: object) -> None:
        """The child's stderr to ours, unchanged, as it comes; the last ``_TAIL_BYTES`` kept. Ends when
        the child (and any process that inherited the pipe) has closed it."""
        assert isinstance(pipe, io.BufferedReader)
        fd = pipe.fileno()
        try:
            out = sys.stderr.fileno()
        except (AttributeError, ValueError, OSError):
            out = 2
        try:
            while chunk := os.read(fd, 65536):
                self._tail += chunk
                del self._tail[:-_TAIL_BYTES]
                # Our own stderr gone: keep draining, or the child would block on a full pipe.
                with contextlib.suppress(OSError):
                    os.write(out, chunk)
        except OSError:
            pass
        finally:
            pipe.close()

    def stderr_tail(self, lines: int = 10, wait: float = 1.0) -> list[str]:
        """The last ``lines`` lines the child wrote to stderr (from its last start). After it has exited,
        first waits up to ``wait`` s for the copy to reach the end of the pipe."""
        tee = self._tee
        if tee is not None and (self.process is None or self.process.poll() is not None):
            tee.join(wait)
        text = bytes(self._tail).decode(errors="replace")
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def ready(self, timeout: float = 60.0) -> str:
        """Wait for the child's announcement; a child that exits or stays silent is stopped and raises."""
        process = self.process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        fd = process.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(0.0, min(left, 0.5)))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                line += chunk
            elif left <= 0 or process.poll() is not None:
                break
        if not line.endswith(b"\n"):
            try:  # it closed its stdout: it is exiting, give it a moment to say how
                code: int | None = process.wait(1.0) if process.poll() is None else process.returncode
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            what = f"exited with {code}" if code is not None else f"said nothing in {timeout:.0f} s"
            raise ChildStartError(f"{self.name} did not start: it {what} (its errors are above)")
        process.stdout.close()  # it has said all it will say here (its stdout is its stderr now)
        self.ready_line = line.decode().strip()
        return self.ready_line

    def start(self, timeout: float = 60.0) -> str:
        return self.spawn().ready(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; always reaped. The exit code, or None."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
        return process.returncode


def _watch_parent() -> None:
    """The child's side of the lifeline: end of file on stdin means the parent is gone."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(_ORPHAN_GRACE_S)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit("usage: python -m cardless.cli.child MODULE [ARGS...]")
    _watch_parent()
    sys.argv = [args[0], *args[1:]]
    runpy.run_module(args[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

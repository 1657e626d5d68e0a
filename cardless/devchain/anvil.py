"""Foundry's anvil (npm ``@foundry-rs/anvil``, pinned in package.json) as a child process with the dev
accounts.

:class:`AnvilNode` starts the anvil binary from ``node_modules`` on a loopback port (``0``: a free one,
read back from anvil's own ``Listening on`` line, so no port is guessed and raced for), on chain id
31337, and gives it the embedded chain's dev accounts: the keys ``1..10``, each funded with 1,000,000
ETH and unlocked (``anvil_impersonateAccount``), so ``eth_sendTransaction`` from them works as on the
embedded node. anvil's own mnemonic accounts are not created (``--accounts 0``): one set of dev
accounts, whatever the chain. ``stop()`` (or leaving the ``with`` block) terminates it and waits.

Unlike the embedded node, anvil mines asynchronously (poll for receipts), keeps a mempool, answers
``safe``/``finalized`` and can reorganise (``anvil_reorg``, ``evm_snapshot``/``evm_revert``): it is the
real-node backend of the shared chain suite and of ``cardless run --chain anvil``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Final, Self

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cardless.devchain.chain import DEV_CHAIN_ID

__all__ = ["DEV_ACCOUNT_BALANCE", "AnvilError", "AnvilNode", "anvil_binary", "dev_accounts"]

_log = logging.getLogger(__name__)

ROOT: Final = Path(__file__).resolve().parents[2]
DEV_ACCOUNT_COUNT: Final = 10
DEV_ACCOUNT_BALANCE: Final = 1_000_000 * 10**18
"""What eth-tester gives each dev account on the embedded chain; anvil gets the same."""

_LISTENING: Final = re.compile(rb"Listening on (\S+):(\d+)")
_PLATFORMS: Final = {("Linux", "x86_64"): "linux-amd64", ("Linux", "aarch64"): "linux-arm64"}
_PLATFORMS_MAC: Final = {"x86_64": "darwin-amd64", "arm64": "darwin-arm64"}


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM anvil when the process that started it dies (even by
    SIGKILL), so a killed ``cardless run`` or test never leaves an anvil holding its port. Linux ties this
    to the starting *thread*: start anvil from a thread that lives as long as it should (the main one)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class AnvilError(RuntimeError):
    """anvil is missing, did not start, or refused a dev-account set-up call."""


def dev_accounts() -> list[LocalAccount]:
    """The dev accounts of every dev chain: private keys ``1..10`` (the embedded chain's, printed by
    ``cardless run``)."""
    return [Account.from_key(i.to_bytes(32, "big")) for i in range(1, DEV_ACCOUNT_COUNT + 1)]


def anvil_binary(root: Path = ROOT) -> Path:
    """The anvil executable npm installed: the platform package's binary (no Node.js wrapper between
    us and the process we signal), else the ``node_modules/.bin`` wrapper."""
    system, machine = platform.system(), platform.machine()
    target = _PLATFORMS.get((system, machine)) or (
        _PLATFORMS_MAC.get(machine) if system == "Darwin" else None
    )
    candidates = (
        [root / "node_modules" / "@foundry-rs" / f"anvil-{target}" / "bin" / "anvil"] if target else []
    )
    candidates.append(root / "node_modules" / ".bin" / "anvil")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AnvilError(
        "anvil is not installed: run `npm ci` in the repository root (package.json pins @foundry-rs/anvil)"
    )


class AnvilNode:
    """One anvil process on loopback with the dev accounts; a context manager.

    ``extra_args`` go to anvil unchanged (``--block-time 1``, ``--no-mining``, ``--base-fee 0`` ...).
    anvil's own log (one line per request) goes to ``log_file`` (default: a temporary file removed at
    stop), never to our stdout; its tail is quoted when anvil fails to start.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        chain_id: int = DEV_CHAIN_ID,
        extra_args: tuple[str, ...] = (),
        log_file: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.host, self.port, self.chain_id = host, port, chain_id
        self.extra_args = extra_args
        self.log_file = log_file
        self.start_timeout = start_timeout
        self.accounts: list[LocalAccount] = dev_accounts()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._url: str | None = None
        self._cache: Path | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise AnvilError("anvil is not started")
        return self._url

    @property
    def pid(self) -> int:
        if self._process is None:
            raise AnvilError("anvil is not started")
        return self._process.pid

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Self:
        if self._process is not None:
            raise AnvilError("anvil is already started")
        binary = anvil_binary()
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log, self._log_path = self.log_file.open("wb"), self.log_file
        else:
            handle = tempfile.NamedTemporaryFile(prefix="anvil-", suffix=".log", delete=False)  # noqa: SIM115
            self._log, self._log_path = handle, Path(handle.name)
        args = [
            str(binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            "0",
            *self.extra_args,
        ]
        if "--cache-path" not in self.extra_args:
            # Past the states it keeps in memory anvil writes one directory of JSON states per block under
            # ``~/.foundry/anvil/tmp`` and leaves them when it is stopped: tens of GB over a day of
            # benches. Ours go to a temporary directory removed at stop.
            self._cache = Path(tempfile.mkdtemp(prefix="anvil-cache-"))
            args += ["--cache-path", str(self._cache)]
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop anvil in order
            preexec_fn=_die_with_parent,  # a prctl only: safe between fork and exec
        )
        try:
            self._url = self._wait_listening()
            self._wait_answering()
            self._unlock_dev_accounts()
        except BaseException:
            self.stop()
            raise
        _log.info("anvil %d serving JSON-RPC at %s (pid %d)", self.chain_id, self._url, self._process.pid)
        return self

    def stop(self) -> None:
        """Terminate anvil and wait for it (kill after 5 s); idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._log_path is not None and self.log_file is None:
            self._log_path.unlink(missing_ok=True)
        self._log_path = None
        if self._cache is not None:
            shutil.rmtree(self._cache, ignore_errors=True)
            self._cache = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ JSON-RPC

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call to anvil (set-up and dev methods); an error reply raises :class:`AnvilError`."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
        if "error" in reply:
            raise AnvilError(f"anvil refused {method}: {reply['error']}")
        return reply["result"]

    # ------------------------------------------------------------------ start-up steps

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_bytes()[-2000:].decode(errors="replace")

    def _wait_listening(self) -> str:
        assert self._process is not None and self._log_path is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self._log_path.read_bytes())
            if match:
                host, port = match.group(1).decode(), int(match.group(2))
                host = f"[{host}]" if ":" in host else host
                return f"http://{host}:{port}"
            if self._process.poll() is not None:
                raise AnvilError(f"anvil exited with {self._process.returncode}:\n{self._log_tail()}")
            time.sleep(0.02)
        raise AnvilError(f"anvil did not listen within {self.start_timeout} s:\n{self._log_tail()}")

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                chain_id = int(self.rpc("eth_chainId"), 16)
                break
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise AnvilError(f"anvil did not answer within {self.start_timeout} s") from None
                time.sleep(0.02)
        if chain_id != self.chain_id:
            raise AnvilError(f"anvil answers chain id {chain_id}, expected {self.chain_id}")

    def _unlock_dev_accounts(self) -> None:
        """Fund and unlock keys 1..10 exactly as the embedded chain has them."""
        for account in self.accounts:
            self.rpc("anvil_setBalance", account.address, hex(DEV_ACCOUNT_BALANCE))
            self.rpc("anvil_impersonateAccount", account.address)

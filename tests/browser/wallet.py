"""An EIP-1193 test wallet for the browser tests: ``window.ethereum`` in the page, backed by a dev key
in the test process that signs for real and sends to the embedded chain's JSON-RPC.

The page sees an ordinary injected provider; every request crosses a Playwright binding to
:class:`TestWallet`, which answers as a wallet would: accounts, chain id, ``eth_sendTransaction``
(signed here, with the nonce, gas and EIP-1559 fees filled in), ``personal_sign``,
``eth_signTypedData_v4``, ``wallet_switchEthereumChain``; anything else goes to the node. Tests script
the user: ``reject("eth_sendTransaction")`` declines the next such request with EIP-1193 code 4001, a
``chain_id`` other than the node's is a wallet on the wrong network. ``calls`` records what the page
asked for, so a test can assert that nothing was sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.signers.local import LocalAccount
from playwright.sync_api import BrowserContext
from web3 import Web3

__all__ = ["INIT_SCRIPT", "TestWallet"]

INIT_SCRIPT = """
(() => {
  const listeners = {}
  window.ethereum = {
    isCardlessTestWallet: true,
    async request(args) {
      const answer = await window.__cardlessWallet(args.method, args.params ?? [])
      if (answer.error) {
        const error = new Error(answer.error.message)
        error.code = answer.error.code
        throw error
      }
      return answer.result
    },
    on(event, listener) { (listeners[event] ??= []).push(listener) },
    removeListener(event, listener) {
      listeners[event] = (listeners[event] ?? []).filter((f) => f !== listener)
    },
  }
})()
"""

_USER_REJECTED = {"code": 4001, "message": "User rejected the request."}


@dataclasses.dataclass
class TestWallet:
    __test__ = False  # not a pytest test class

    account: LocalAccount
    w3: Web3
    chain_id: int
    known_chains: tuple[int, ...] = ()
    calls: list[str] = dataclasses.field(default_factory=list)
    before_send: Callable[[], None] | None = None
    """Run once, before the first transaction is signed (a test arms a provider fault there)."""
    _rejections: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def dev(cls, index: int, w3: Web3) -> TestWallet:
        account: LocalAccount = Account.from_key(index.to_bytes(32, "big"))
        chain = int(w3.eth.chain_id)
        return cls(account=account, w3=w3, chain_id=chain, known_chains=(chain,))

    @property
    def address(self) -> str:
        return str(self.account.address)

    def reject(self, method: str, *, after: int = 0) -> None:
        """The user declines a ``method`` request: the next one, or the one after ``after`` more."""
        self._rejections.append(f"{method}#{self.calls.count(method) + after}")

    def sent(self) -> int:
        return self.calls.count("eth_sendTransaction")

    def install(self, context: BrowserContext) -> None:
        context.expose_binding(
            "__cardlessWallet", lambda _source, method, params: self.handle(method, params)
        )
        context.add_init_script(INIT_SCRIPT)

    def handle(self, method: str, params: list[Any]) -> dict[str, Any]:
        ticket = f"{method}#{self.calls.count(method)}"
        self.calls.append(method)
        if ticket in self._rejections:
            self._rejections.remove(ticket)
            return {"error": _USER_REJECTED}
        try:
            return {"result": self._answer(method, params)}
        except _WalletError as exc:
            return {"error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # the node refused: a wallet shows the node's message
            return {"error": {"code": -32603, "message": str(exc)}}

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.address]
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "wallet_switchEthereumChain":
            wanted = int(params[0]["chainId"], 16)
            if wanted not in self.known_chains:
                raise _WalletError(4902, f"Unrecognized chain ID {params[0]['chainId']}")
            self.chain_id = wanted
            return None
        if method == "wallet_addEthereumChain":
            self.known_chains += (int(params[0]["chainId"], 16),)
            return None
        if method == "personal_sign":
            message = encode_defunct(hexstr=params[0])
            return "0x" + self.account.sign_message(message).signature.hex().removeprefix("0x")
        if method == "eth_signTypedData_v4":
            import json

            typed = json.loads(params[1]) if isinstance(params[1], str) else params[1]
            signed = self.account.sign_message(encode_typed_data(full_message=typed))
            return "0x" + signed.signature.hex().removeprefix("0x")
        if method == "eth_sendTransaction":
            return self._send(params[0])
        if self.chain_id != int(self.w3.eth.chain_id):
            raise _WalletError(4901, "the wallet is not connected to this chain")
        answer = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in answer:
            raise _WalletError(int(answer["error"].get("code", -32603)), str(answer["error"].get("message")))
        return answer["result"]

    def _send(self, request: dict[str, Any]) -> str:
        if self.before_send is not None:
            hook, self.before_send = self.before_send, None
            hook()
        if self.chain_id != int(self.w3.eth.chain_id):
            raise _WalletError(4901, "the wallet is not connected to this chain")
        tx: dict[str, Any] = {
            "from": self.address,
            "to": Web3.to_checksum_address(request["to"]),
            "data": request.get("data", "0x"),
            "value": int(request.get("value", "0x0"), 16),
            "chainId": self.chain_id,
            "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
        }
        tx["gas"] = self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        base = int(self.w3.eth.get_block("latest")["baseFeePerGas"])
        tx["maxPriorityFeePerGas"] = 10**9
        tx["maxFeePerGas"] = 2 * base + 10**9
        signed = self.account.sign_transaction(tx)
        return Web3.to_hex(self.w3.eth.send_raw_transaction(signed.raw_transaction))


class _WalletError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

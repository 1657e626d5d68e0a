"""Where the Cardless contracts live on a chain: the deployment file.

A deployment file is JSON written once when the contracts are deployed (:meth:`Deployment.save`) and
read by the gateway, the oracle and auditors at start (:func:`load_deployment`). Reading it checks the
file against the live chain, so a service never runs against a chain it was not configured for: the
chain id, code at the escrow and token addresses, the escrow built from the same sources as
``contracts/build``, the signers and tokens authorised on the escrow. Every error names the field::

    {
      "version": 1,
      "chain_id": 31337,
      "rpc_url": "http://127.0.0.1:8545",
      "escrow": "0x…",
      "escrow_source_hash": "sha256:…",
      "owner": "0x…",
      "fee_recipient": "0x…",
      "quote_signers": ["0x…"],
      "oracle_signers": ["0x…"],
      "tokens": [{"symbol": "ETH", "address": "0x0000…0000", "decimals": 18},
                 {"symbol": "tUSDC", "address": "0x…", "decimals": 6}],
      "deployed_block": 1
    }

``owner`` and ``fee_recipient`` are as deployed (both can change on chain later). ``deployed_block``
is the first block that can hold an escrow event, where a chain watcher starts.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final, Literal

from eth_typing import ChecksumAddress
from eth_utils import is_checksum_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3Exception

from cardless.protocol._eip712 import DOMAIN_NAME, DOMAIN_VERSION, NATIVE_TOKEN, EscrowDomain
from cardless.protocol._exceptions import ProtocolBaseError
from cardless.protocol.artifacts import load_artifact
from cardless.protocol.erc20 import ERC20_ABI

__all__ = [
    "Deployment",
    "DeploymentError",
    "TokenDeployment",
    "load_deployment",
]


_ESCROW: Final = "CardlessEscrow"
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class DeploymentError(ProtocolBaseError, ValueError):
    """A deployment file is unreadable, malformed, or does not match the chain; ``field`` names where."""

    def __init__(self, field: str, reason: str, *, path: Path | str | None = None) -> None:
        super().__init__(f"{path}: {field}: {reason}" if path is not None else f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.path = path


def _address(value: str) -> ChecksumAddress:
    if not _HEX_ADDRESS.fullmatch(value):
        raise ValueError("not an address (0x and 40 hex digits)")
    if value != value.lower() and value[2:] != value[2:].upper() and not is_checksum_address(value):
        raise ValueError("mixed-case address with a wrong EIP-55 checksum (a typo?)")
    return to_checksum_address(value)


Address = Annotated[ChecksumAddress, AfterValidator(_address)]


class TokenDeployment(BaseModel):
    """A token the escrow accepts; the native coin has the zero address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str = Field(min_length=1, max_length=32)
    address: Address
    decimals: int = Field(ge=0, le=77)

    @property
    def is_native(self) -> bool:
        return self.address == NATIVE_TOKEN


class Deployment(BaseModel):
    """The contracts of one Cardless system on one chain (see the module docstring for the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    chain_id: int = Field(gt=0)
    rpc_url: str
    escrow: Address
    escrow_source_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    owner: Address
    fee_recipient: Address
    quote_signers: list[Address] = Field(min_length=1)
    oracle_signers: list[Address] = Field(min_length=1)
    tokens: list[TokenDeployment] = Field(min_length=1)
    deployed_block: int = Field(ge=0)

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must be an http(s):// or ws(s):// URL")
        return value

    @model_validator(mode="after")
    def _unique_tokens(self) -> Deployment:
        for kind in ("symbol", "address"):
            seen: set[str] = set()
            for index, token in enumerate(self.tokens):
                value = getattr(token, kind)
                if value in seen:
                    # a model-level error cannot carry a location, so it names the field in its text
                    raise ValueError(f"tokens[{index}].{kind}: {value} is listed twice")
                seen.add(value)
        return self

    # ------------------------------------------------------------------ use

    @property
    def domain(self) -> EscrowDomain:
        """The EIP-712 domain quotes and proofs for this escrow are signed under."""
        return EscrowDomain(chain_id=self.chain_id, verifying_contract=self.escrow)

    def token(self, symbol: str) -> TokenDeployment:
        for token in self.tokens:
            if token.symbol == symbol:
                return token
        raise KeyError(f"no token {symbol!r} in the deployment (have {[t.symbol for t in self.tokens]})")

    # ------------------------------------------------------------------ the file

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def save(self, path: Path | str) -> None:
        """Write the file atomically (a reader never sees half of it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def read(cls, path: Path | str) -> Deployment:
        """Parse and validate the file alone; :func:`load_deployment` also checks it against the chain."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise DeploymentError("file", "missing", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DeploymentError("file", f"unreadable ({exc})", path=path) from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DeploymentError(
                "file", f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path=path
            ) from exc
        if not isinstance(doc, dict):
            raise DeploymentError("file", f"expected a JSON object, got {type(doc).__name__}", path=path)
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise _field_error(exc, path) from exc


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _field_error(exc: ValidationError, path: Path | str) -> DeploymentError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _location(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if not field:  # a model-level check names the field at the start of its message
        field, _, message = message.partition(": ")
    if first["type"] == "missing":
        message = "missing"
    elif first["type"] == "extra_forbidden":
        message = "unknown field (a typo, or a file for another version?)"
    if len(errors) > 1:
        others = ", ".join(_location(e["loc"]) or "file" for e in errors[1:])
        message += f" (also wrong: {others})"
    return DeploymentError(field, message, path=path)


def load_deployment(path: Path | str, w3: Web3) -> Deployment:
    """Read ``path`` and check it against the chain ``w3`` is connected to.

    Raises :class:`DeploymentError` naming the field at fault when the file is missing or malformed,
    is for another chain, points at an address without code, was built from other contract sources
    than ``contracts/build``, or lists a signer or token the escrow does not authorise.
    """
    deployment = Deployment.read(path)

    def fail(field: str, reason: str) -> DeploymentError:
        return DeploymentError(field, reason, path=path)

    chain_id = w3.eth.chain_id
    if deployment.chain_id != chain_id:
        raise fail("chain_id", f"the file is for chain {deployment.chain_id}, the node is chain {chain_id}")
    head = w3.eth.block_number
    if deployment.deployed_block > head:
        raise fail(
            "deployed_block",
            f"block {deployment.deployed_block} is after the chain head {head} (was the chain reset?)",
        )
    if not w3.eth.get_code(deployment.escrow):
        raise fail("escrow", f"no contract code at {deployment.escrow} on chain {chain_id}")
    build_hash = load_artifact(_ESCROW).source_hash
    if deployment.escrow_source_hash != build_hash:
        raise fail(
            "escrow_source_hash",
            f"{deployment.escrow_source_hash} differs from contracts/build ({build_hash}): "
            "the escrow was deployed from other sources; redeploy or use the matching build",
        )

    escrow = w3.eth.contract(address=deployment.escrow, abi=load_artifact(_ESCROW).abi)
    try:  # ERC-5267: the escrow names its EIP-712 domain, which quotes and proofs are signed under
        _, name, version, domain_chain_id, verifying_contract, *_ = escrow.functions.eip712Domain().call()
    except Web3Exception as exc:
        raise fail("escrow", f"the contract at {deployment.escrow} is not a {_ESCROW} ({exc})") from exc
    if (name, version, domain_chain_id, verifying_contract) != (
        DOMAIN_NAME,
        DOMAIN_VERSION,
        chain_id,
        deployment.escrow,
    ):
        raise fail(
            "escrow",
            f"the contract at {deployment.escrow} has EIP-712 domain {name!r} version {version!r} on chain "
            f"{domain_chain_id} at {verifying_contract}, not a {_ESCROW} v{DOMAIN_VERSION} here",
        )
    for kind, check in (("quote_signers", "isQuoteSigner"), ("oracle_signers", "isOracleSigner")):
        for index, signer in enumerate(getattr(deployment, kind)):
            if not getattr(escrow.functions, check)(signer).call():
                raise fail(f"{kind}[{index}]", f"{signer} is not authorised on the escrow ({check} is false)")
    for index, token in enumerate(deployment.tokens):
        _check_token(w3, escrow, token, f"tokens[{index}]", fail)
    return deployment


def _check_token(
    w3: Web3,
    escrow: Contract,
    token: TokenDeployment,
    field: str,
    fail: Callable[[str, str], DeploymentError],
) -> None:
    if not token.is_native and not w3.eth.get_code(token.address):
        raise fail(f"{field}.address", f"no contract code at {token.address}")
    if not escrow.functions.isTokenAllowed(token.address).call():
        raise fail(f"{field}.address", f"{token.symbol} ({token.address}) is not allowed on the escrow")
    if token.is_native:
        return
    contract = w3.eth.contract(address=token.address, abi=ERC20_ABI)
    decimals = contract.functions.decimals().call()
    if decimals != token.decimals:
        raise fail(f"{field}.decimals", f"the file says {token.decimals}, the token says {decimals}")
    symbol = contract.functions.symbol().call()
    if symbol != token.symbol:
        raise fail(f"{field}.symbol", f"the file says {token.symbol!r}, the token says {symbol!r}")

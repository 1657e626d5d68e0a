"""Loads the committed contract build output (``contracts/build``) so running needs no Node.js."""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from cardless.protocol._exceptions import ArtifactError

__all__ = ["BUILD_DIR", "Artifact", "load_artifact"]

BUILD_DIR = Path(
    os.environ.get("CARDLESS_CONTRACTS_BUILD", Path(__file__).resolve().parents[2] / "contracts" / "build")
)


@dataclasses.dataclass(frozen=True, slots=True)
class Artifact:
    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_hash: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load ``contracts/build/<name>.json``.

    ``name`` may include a sub-folder, e.g. ``test-helpers/MockERC20``.
    """
    path = BUILD_DIR / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; run `make contracts` to build it") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc
    try:
        artifact = Artifact(
            contract_name=doc["contractName"],
            abi=doc["abi"],
            bytecode=doc["bytecode"],
            deployed_bytecode=doc["deployedBytecode"],
            compiler_version=doc["compiler"]["version"],
            source_hash=doc["sourceHash"],
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: missing field {exc}") from exc
    if not artifact.bytecode.startswith("0x") or len(artifact.bytecode) < 4:
        raise ArtifactError(f"{path}: bytecode is empty")
    return artifact

"""contracts/build must be exactly what a fresh Hardhat compile of contracts/ produces."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "contracts" / "build"


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npx = shutil.which("npx")
    assert npx, "npx not found: `make test` installs Node packages; Node.js 20 is required"
    out = tmp_path_factory.mktemp("build")
    proc = subprocess.run(
        [npx, "hardhat", "export-build", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"hardhat export-build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


# `long` (CI runs it in `make test-long`): a fresh Hardhat compile (Node, solc as WebAssembly) holds a
# worker ~20 s, and only a contract edit without `make contracts` can fail it.
@pytest.mark.long
def test_committed_build_matches_fresh_compile(fresh_build: Path) -> None:
    committed = sorted(p.relative_to(BUILD) for p in BUILD.rglob("*.json"))
    fresh = sorted(p.relative_to(fresh_build) for p in fresh_build.rglob("*.json"))
    assert committed == fresh, "contracts/build lists different files; run `make contracts`"
    for rel in committed:
        old = json.loads((BUILD / rel).read_text())
        new = json.loads((fresh_build / rel).read_text())
        for key in ("sourceHash", "compiler", "abi", "bytecode", "deployedBytecode"):
            assert old[key] == new[key], f"{rel}: {key} differs from a fresh compile; run `make contracts`"


def test_build_pins_cancun_and_optimizer() -> None:
    doc = json.loads((BUILD / "CardlessEscrow.json").read_text())
    settings = doc["compiler"]["settings"]
    assert settings["evmVersion"] == "cancun"
    assert settings["optimizer"]["enabled"] is True
    assert doc["compiler"]["version"].startswith("0.8.37")
    # EIP-170: deployed code must fit in 24,576 bytes.
    assert len(bytes.fromhex(doc["deployedBytecode"][2:])) <= 24_576

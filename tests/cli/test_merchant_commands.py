"""``cardless merchant ...`` and ``cardless catalogue load``, in process (typer's runner), against a
database of their own and the session system's chain (for the escrow's fee cap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardless.cli.main import app
from cardless.cli.system import System

SHIPPED = Path(__file__).resolve().parents[2] / "gateway" / "catalogue.toml"


@pytest.fixture
def env(system: System, tmp_path: Path) -> dict[str, str]:
    assert system.node is not None
    return {
        "CARDLESS_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "CARDLESS_DEPLOYMENT_FILE": str(system.settings.effective_deployment_file),
        "CARDLESS_CHAIN_RPC_URL": system.node.url,
        "CARDLESS_VAR_DIR": str(tmp_path / "var"),
    }


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_operator_adds_lists_keys_and_disables_a_merchant(env: dict[str, str], system: System) -> None:
    code, out, err = _run(
        env,
        "merchant",
        "add",
        "cli-shop",
        "--name",
        "CLI Shop",
        "--address",
        "0x" + "ee" * 20,
        "--fee-bps",
        "50",
    )
    assert code == 0, err
    assert json.loads(out)["id"] == "cli-shop"
    code, out, _ = _run(env, "merchant", "key", "create", "cli-shop", "--scope", "orders:read")
    assert code == 0
    key = json.loads(out)
    assert key["key"].startswith("ck_live_") and key["scopes"] == ["orders:read"]
    code, out, _ = _run(env, "merchant", "key", "list", "cli-shop")
    assert key["key"] not in out and json.loads(out)[0]["prefix"] == key["prefix"]
    code, out, _ = _run(
        env, "merchant", "key", "rotate", "cli-shop", str(key["id"]), "--overlap-seconds", "60"
    )
    assert code == 0 and json.loads(out)["key"] != key["key"]
    code, out, _ = _run(env, "merchant", "key", "revoke", "cli-shop", str(key["id"]))
    assert code == 0 and json.loads(out)["status"] == "revoked"
    code, out, _ = _run(env, "merchant", "disable", "cli-shop", "--reason", "test")
    assert code == 0 and json.loads(out)["status"] == "disabled"
    code, out, _ = _run(env, "merchant", "list")
    assert [m["id"] for m in json.loads(out)] == ["cli-shop"]


def test_refusals_exit_1_with_one_line(env: dict[str, str], system: System) -> None:
    cap = int(system.escrow().functions.feeCapBps().call())
    code, _, err = _run(
        env,
        "merchant",
        "add",
        "too-dear",
        "--name",
        "X",
        "--address",
        "0x" + "ef" * 20,
        "--fee-bps",
        str(cap + 1),
    )
    assert code == 1 and "fee cap" in err
    code, _, err = _run(env, "merchant", "key", "create", "no-such-shop", "--scope", "orders:read")
    assert code == 1 and "not found" in err
    code, _, err = _run(env, "merchant", "key", "create", "no-such-shop", "--scope", "root")
    assert code == 1


def test_catalogue_load_seeds_once(env: dict[str, str]) -> None:
    code, out, _ = _run(env, "catalogue", "load", str(SHIPPED))
    assert code == 0 and json.loads(out) == {"merchants_added": 2, "skus_added": 6}
    code, out, _ = _run(env, "catalogue", "load", str(SHIPPED))
    assert json.loads(out) == {"merchants_added": 0, "skus_added": 0}

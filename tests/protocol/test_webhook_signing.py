"""The webhook signature scheme (``cardless.protocol.webhooks``) and the two receivers' verifiers printed
in docs/webhooks.md: the Python one and the Node one (run under ``node``) agree with the reference on
genuine, tampered, stale, future, rotated and malformed deliveries. Also the destination policy."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from cardless.protocol import webhooks
from cardless.protocol.webhooks import SignatureMismatch, address_refusal, signature_header, verify
from tests.oracles.test_webhooks import documented_python_verifier, documented_snippet

NOW = 1_764_760_000
SECRET = "whsec_" + "k" * 43
OLD = "whsec_" + "o" * 43
BODY = b'{"created":1764760000,"data":{"order":{"id":"0x01"}},"id":"evt_1","type":"order.paid"}'


def cases() -> list[dict[str, Any]]:
    """(body, header, secret, now) and whether a receiver must accept it."""
    good = signature_header([SECRET], NOW, BODY)
    rotated = signature_header([SECRET, OLD], NOW, BODY)
    return [
        {"name": "genuine", "body": BODY, "header": good, "secret": SECRET, "now": NOW + 10, "ok": True},
        {"name": "tampered", "body": BODY + b" ", "header": good, "secret": SECRET, "now": NOW, "ok": False},
        {"name": "wrong secret", "body": BODY, "header": good, "secret": OLD, "now": NOW, "ok": False},
        {"name": "stale", "body": BODY, "header": good, "secret": SECRET, "now": NOW + 301, "ok": False},
        {"name": "future", "body": BODY, "header": good, "secret": SECRET, "now": NOW - 301, "ok": False},
        {"name": "edge", "body": BODY, "header": good, "secret": SECRET, "now": NOW + 300, "ok": True},
        {"name": "rotation new", "body": BODY, "header": rotated, "secret": SECRET, "now": NOW, "ok": True},
        {"name": "rotation old", "body": BODY, "header": rotated, "secret": OLD, "now": NOW, "ok": True},
        {"name": "no v1", "body": BODY, "header": f"t={NOW}", "secret": SECRET, "now": NOW, "ok": False},
        {"name": "two t", "body": BODY, "header": f"t={NOW},{good}", "secret": SECRET, "now": NOW,
         "ok": False},
        {"name": "garbage", "body": BODY, "header": "v1,,=,t=x", "secret": SECRET, "now": NOW, "ok": False},
        {"name": "empty", "body": BODY, "header": "", "secret": SECRET, "now": NOW, "ok": False},
        {"name": "unicode t", "body": BODY, "header": good.replace(f"t={NOW}", "t=١٢"), "secret": SECRET,
         "now": NOW, "ok": False},
    ]  # fmt: skip


def reference(case: dict[str, Any]) -> bool:
    try:
        verify(case["body"], case["header"], [case["secret"]], now=case["now"])
    except SignatureMismatch:
        return False
    return True


def test_the_reference_verifier_decides_every_case_as_expected() -> None:
    assert {c["name"]: reference(c) for c in cases()} == {c["name"]: c["ok"] for c in cases()}


def test_the_documented_python_verifier_agrees() -> None:
    check = documented_python_verifier()
    got = {c["name"]: check(c["body"], c["header"], c["secret"], c["now"]) for c in cases()}
    assert got == {c["name"]: c["ok"] for c in cases()}


@pytest.mark.slow
def test_the_documented_node_verifier_agrees() -> None:
    harness = documented_snippet("verify-node") + (
        "\nconst cases = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));\n"
        "process.stdout.write(JSON.stringify(Object.fromEntries(cases.map((c) => "
        "[c.name, verifyCardlessSignature(Buffer.from(c.body, 'latin1'), c.header, c.secret, c.now)]))));\n"
    )
    payload = [{**c, "body": c["body"].decode("latin1")} for c in cases()]
    result = subprocess.run(
        ["node", "-e", harness],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert json.loads(result.stdout) == {c["name"]: c["ok"] for c in cases()}


def test_the_header_has_one_v1_per_live_secret_and_the_hmac_is_over_t_dot_body() -> None:
    header = signature_header([SECRET, OLD], NOW, BODY)
    t, new, old = header.split(",")
    assert t == f"t={NOW}"
    assert new == "v1=" + webhooks.sign(SECRET, NOW, BODY) and old == "v1=" + webhooks.sign(OLD, NOW, BODY)
    # Known answer: HMAC-SHA256(key, "<t>." + body), computed independently of the module.
    import hashlib
    import hmac

    assert webhooks.sign("k", 1, b"{}") == hmac.new(b"k", b"1.{}", hashlib.sha256).hexdigest()
    assert webhooks.generate_secret() != webhooks.generate_secret()


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("100.64.0.1", "not a public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),  # reserved (240/4): the IANA registry, as ipaddress reads it
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("192.0.2.10", "private"),  # documentation range
        ("not-an-ip", "not an IP"),
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_public_addresses_may_receive_webhooks(address: str, refused: str | None) -> None:
    why = address_refusal(address)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why

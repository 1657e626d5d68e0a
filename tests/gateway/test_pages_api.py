"""The public routes the pages added (tests/browser drives them through Chromium): the game-account
check, one order's server-sent events, the pages and their assets, and the committed bundle's
freshness."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from gateway.api.pages import preferred_language
from tests.support.shop import Shop, assert_problem, dev_wallet

ROOT = Path(__file__).resolve().parents[2]


def test_an_account_check_names_the_nickname_and_writes_nothing(shop: Shop) -> None:
    before = shop.counts()
    ok = shop.api.post("/v1/accounts/check", json={"sku": "genshin-60", "account": " 12345678 "})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"account": "12345678", "provider": "simulator", "nickname": "player_5678"}
    assert "RateLimit" in ok.headers or "ratelimit-policy" in {k.lower() for k in ok.headers}
    typo = shop.api.post("/v1/accounts/check", json={"sku": "genshin-60", "account": "99999999"})
    assert "does not accept this game account" in assert_problem(typo, 422, "account")["detail"]
    lookalike = shop.api.post("/v1/accounts/check", json={"sku": "genshin-60", "account": "１２３４５６７８"})
    assert "'12345678'" in assert_problem(lookalike, 422, "account")["detail"]
    assert_problem(
        shop.api.post("/v1/accounts/check", json={"sku": "no-such-sku", "account": "12345678"}), 404, "sku"
    )
    assert shop.counts() == before


def test_order_events_stream_the_public_order_until_it_settles(shop: Shop) -> None:
    buyer = dev_wallet(10)
    quote = shop.quote(buyer).json()
    order_id = quote["order_id"]
    states: list[str] = []
    with httpx.stream(
        "GET", f"{shop.system.gateway_url}/v1/orders/{order_id}/events", timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "order":
                body = json.loads(line[6:])
                assert set(body) == {"order_id", "state", "chain", "receipt_hash", "proof", "refund_reason"}
                states.append(body["state"])
                if body["state"] == "quoted":
                    shop.pay(buyer, quote)
    # Each change once, in order, ending with settled (the stream closes itself).
    assert states[0] == "quoted" and states[-1] == "settled"
    assert len(states) == len(set(states))
    assert body["chain"]["settle_tx"] and body["proof"]["signature"]


def test_order_events_for_an_unknown_order_are_404(shop: Shop) -> None:
    assert_problem(shop.api.get(f"/v1/orders/0x{'ab' * 32}/events"), 404)


def test_pages_are_served_with_a_strict_policy_and_only_their_own_assets(shop: Shop) -> None:
    for path in ("/", "/checkout", "/merchant", "/audit", "/wallet-setup"):
        page = shop.api.get(path, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
        assert page.status_code == 200
        assert '<html lang="zh-CN">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    english = shop.api.get("/checkout", headers={"Accept-Language": "en-GB", "Cookie": "cardless_lang=en"})
    assert '<html lang="en">' in english.text
    bundle = shop.api.get("/static/app.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
    for bad in ("/static/../api/pages.py", "/static/%2e%2e/templates/page.html", "/static/nope.js"):
        assert shop.api.get(bad).status_code == 404, bad
    paths = shop.api.get("/openapi.json").json()["paths"]
    assert "/v1/accounts/check" in paths and "/v1/orders/{order_id}/events" in paths
    assert "/checkout" not in paths and "/static/{name}" not in paths


def test_language_negotiation() -> None:
    assert preferred_language(None, "zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert preferred_language(None, "en;q=0.5,zh-TW;q=0.9") == "zh-CN"
    assert preferred_language(None, "fr-FR,en;q=0.8") == "en"
    assert preferred_language(None, None) == "en"
    assert preferred_language("en", "zh-CN") == "en"
    assert preferred_language("xx", "zh") == "zh-CN"


def test_the_committed_bundle_is_built_from_the_current_sources() -> None:
    """frontend/build.mjs records the SHA-256 of its inputs; run `make web` after changing them."""
    manifest = json.loads((ROOT / "gateway/web/static/build.json").read_text())
    digest = hashlib.sha256()
    files = sorted(
        p.relative_to(ROOT).as_posix()
        for entry in manifest["inputs"]
        for p in ([ROOT / entry] if (ROOT / entry).is_file() else (ROOT / entry).rglob("*"))
        if p.is_file()
    )
    for name in files:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    assert digest.hexdigest() == manifest["sources_sha256"], "gateway/web/static is stale: run `make web`"

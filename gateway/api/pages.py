"""The pages people use: buyer checkout, merchant dashboard, auditor view, wallet set-up.

Each page is one HTML shell (gateway/web/templates/page.html) and the one front-end bundle built by
esbuild from frontend/ into gateway/web/static (``make web``; committed, so the gateway never needs
npm at run time). The pages are clients of the public API only: everything they show they read from
/v1 with the visitor's own credentials, or from the chain through the visitor's wallet or RPC URL.

The first paint's language is chosen here (the ``cardless_lang`` cookie the language switch sets,
else Accept-Language: Chinese when the browser prefers it, else English); the bundle does the rest.
"""

from __future__ import annotations

import json
import string
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from gateway.api import live

__all__ = ["PAGES", "WEB_DIR", "preferred_language", "router"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_DIR = WEB_DIR / "static"

PAGES: dict[str, dict[str, str]] = {
    "/": {"page": "home", "en": "Pay from your wallet", "zh-CN": "用钱包付款"},
    "/checkout": {"page": "checkout", "en": "Checkout", "zh-CN": "结账"},
    "/merchant": {"page": "merchant", "en": "Merchant dashboard", "zh-CN": "商户后台"},
    "/audit": {"page": "audit", "en": "Audit", "zh-CN": "审计"},
    "/wallet-setup": {"page": "wallet-setup", "en": "Wallet set-up", "zh-CN": "钱包设置"},
}
_SHELL_TEXT = {
    "en": {"skip": "Skip to content", "loading": "Loading…", "noscript": "This page needs JavaScript."},
    "zh-CN": {"skip": "跳到正文", "loading": "加载中…", "noscript": "此页面需要启用 JavaScript。"},
}
# Scripts and styles from this origin only (no inline code, no CDN); the auditor view reads any JSON-RPC
# URL the auditor names, so connect-src allows http(s) anywhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".map": "application/json",
}

# The pages and their assets stay out of /openapi.json; the public routes they added are in it.
router = APIRouter()
router.include_router(live.router)


def preferred_language(cookie: str | None, accept_language: str | None) -> str:
    """``zh-CN`` or ``en``: the visitor's explicit choice, else the first Accept-Language range that
    names either (by q-value), else English."""
    if cookie in _SHELL_TEXT:
        return cookie
    ranges: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranges.append((-q, i, tag.strip().lower()))
    for _, _, tag in sorted(ranges):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"


@cache
def _shell() -> string.Template:
    return string.Template((WEB_DIR / "templates" / "page.html").read_text(encoding="utf-8"))


@cache
def _version() -> str:
    """The bundle's source hash (frontend/build.mjs writes it): a new build busts browser caches."""
    manifest: dict[str, Any] = json.loads((STATIC_DIR / "build.json").read_text(encoding="utf-8"))
    return str(manifest["sources_sha256"])[:12]


def _render(request: Request, path: str) -> HTMLResponse:
    page = PAGES[path]
    lang = preferred_language(request.cookies.get("cardless_lang"), request.headers.get("accept-language"))
    html = _shell().substitute(
        lang=lang, page=page["page"], title=page[lang], version=_version(), **_SHELL_TEXT[lang]
    )
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
            "Vary": "Accept-Language, Cookie",
        },
    )


def _page_route(path: str) -> None:
    def handler(request: Request) -> HTMLResponse:
        return _render(request, path)

    router.add_api_route(
        path, handler, methods=["GET"], name=f"page_{PAGES[path]['page']}", include_in_schema=False
    )


for _path in PAGES:
    _page_route(_path)


@router.get("/static/{name:path}", include_in_schema=False)
def get_static(name: str) -> FileResponse:
    """The built bundle and its assets. Only files inside gateway/web/static, by exact name."""
    target = (STATIC_DIR / name).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file() or target.suffix not in _STATIC_TYPES:
        raise HTTPException(status_code=404)
    return FileResponse(
        target,
        media_type=_STATIC_TYPES[target.suffix],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )

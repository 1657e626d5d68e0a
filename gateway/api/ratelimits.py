"""Rate-limit outcomes as HTTP headers, on every limited answer (201 and 429 alike).

Two spellings, because clients read either: the IETF draft's structured fields
(draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy: "client";q=120;w=60`` and
``RateLimit: "client";r=119;t=60``, one list member per limit) and the older, widely implemented
``RateLimit-Limit``/``RateLimit-Remaining``/``RateLimit-Reset`` triple, which can name one limit only
and so names the one closest to refusing.
"""

from __future__ import annotations

from gateway.services import Allowance

__all__ = ["RATE_LIMIT_HEADERS", "rate_limit_headers"]

RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": 'Each limit as `"name";q=<requests>;w=<seconds>` (IETF draft)',
    "RateLimit": 'Each limit as `"name";r=<remaining>;t=<seconds until one frees>` (IETF draft)',
    "RateLimit-Limit": "Requests allowed per window by the limit closest to refusing",
    "RateLimit-Remaining": "Requests left in that limit's window",
    "RateLimit-Reset": "Seconds until that limit frees a request",
}
"""Header name -> description, for the OpenAPI document."""


def rate_limit_headers(allowances: list[Allowance]) -> dict[str, str]:
    tightest = min(allowances, key=lambda a: (a.remaining, -a.reset))
    return {
        "RateLimit-Policy": ", ".join(f'"{a.policy}";q={a.limit};w={a.window}' for a in allowances),
        "RateLimit": ", ".join(f'"{a.policy}";r={a.remaining};t={a.reset}' for a in allowances),
        "RateLimit-Limit": str(tightest.limit),
        "RateLimit-Remaining": str(tightest.remaining),
        "RateLimit-Reset": str(tightest.reset),
    }

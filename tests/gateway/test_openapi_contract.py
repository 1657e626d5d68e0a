"""The OpenAPI document is the contract (DESIGN.md "Gateway API"): every operation has a readable id, a
typed success body and a Problem for each error it declares, and the bodies the running gateway
actually sends conform to it. The conformance check reads only the document, as a generated client
would: it resolves ``$ref`` itself and knows no Cardless model.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support.shop import PROBLEM, Shop, assert_problem, dev_wallet

PROBLEM_REF = "#/components/schemas/Problem"
OPERATIONS = {
    ("get", "/v1/catalogue"): "getCatalogue",
    ("post", "/v1/quotes"): "createQuote",
    ("get", "/v1/orders/{order_id}"): "getOrder",
    ("post", "/v1/providers/{provider}/callback"): "receiveProviderCallback",
    ("get", "/v1/health"): "getHealth",
    ("get", "/healthz"): "getLiveness",
    ("get", "/readyz"): "getReadiness",
    ("get", "/v1/orders"): "listOrderPage",
    ("get", "/v1/audit/receipts"): "exportAuditReceipts",
    ("post", "/v1/auth/siwe/nonce"): "createSiweNonce",
    ("post", "/v1/auth/siwe"): "createSiweSession",
    ("post", "/v1/auth/siwe/merchant"): "createMerchantSession",
    ("delete", "/v1/auth/siwe/merchant"): "deleteMerchantSession",
    ("post", "/v1/merchants"): "createMerchant",
    ("get", "/v1/merchants"): "listMerchants",
    ("get", "/v1/merchants/{merchant_id}"): "getMerchant",
    ("post", "/v1/merchants/{merchant_id}/disable"): "disableMerchant",
    ("post", "/v1/merchants/{merchant_id}/payout-address"): "prepareMerchantPayoutAddress",
    ("post", "/v1/merchants/{merchant_id}/keys"): "createApiKey",
    ("get", "/v1/merchants/{merchant_id}/keys"): "listApiKeys",
    ("post", "/v1/merchants/{merchant_id}/keys/{key_id}/rotate"): "rotateApiKey",
    ("post", "/v1/merchants/{merchant_id}/keys/{key_id}/revoke"): "revokeApiKey",
    ("get", "/v1/merchant"): "getOwnMerchant",
    ("post", "/v1/merchant/keys/current/rotate"): "rotateOwnApiKey",
    ("post", "/v1/merchant/payout-address"): "prepareOwnPayoutAddress",
    ("get", "/v1/merchant/skus"): "listOwnSkus",
    ("post", "/v1/merchant/skus"): "createSku",
    ("get", "/v1/merchant/skus/{sku_id}"): "getOwnSku",
    ("patch", "/v1/merchant/skus/{sku_id}"): "updateSku",
    # The checkout's public routes (issue 13): the account check and one order's server-sent events.
    ("post", "/v1/accounts/check"): "checkAccount",
    ("get", "/v1/orders/{order_id}/events"): "streamOrderEvents",
}
# Webhook endpoints and money, for the operator (/v1/merchants/{merchant_id}) and the merchant's own key.
for _base, _own in (("/v1/merchants/{merchant_id}", ""), ("/v1/merchant", "Own")):
    _hooks = f"{_base}/webhook-endpoints"
    OPERATIONS |= {
        ("post", _hooks): f"create{_own}WebhookEndpoint",
        ("get", _hooks): f"list{_own}WebhookEndpoints",
        ("get", f"{_hooks}/{{endpoint_id}}"): f"get{_own}WebhookEndpoint",
        ("patch", f"{_hooks}/{{endpoint_id}}"): f"update{_own}WebhookEndpoint",
        ("delete", f"{_hooks}/{{endpoint_id}}"): f"delete{_own}WebhookEndpoint",
        ("post", f"{_hooks}/{{endpoint_id}}/rotate-secret"): f"rotate{_own}WebhookSecret",
        ("get", f"{_hooks}/{{endpoint_id}}/deliveries"): f"list{_own}WebhookDeliveries",
        ("post", f"{_hooks}/{{endpoint_id}}/deliveries/{{delivery_id}}/redeliver"): f"redeliver{_own}Webhook",
        ("get", f"{_base}/balances"): f"get{_own or 'Merchant'}Balances",
        ("get", f"{_base}/settlement-report"): f"get{_own or 'Merchant'}SettlementReport",
    }

# Risk (issue 14): the review queue, rules and block lists; the analytics figures.
OPERATIONS |= {
    ("get", "/v1/merchant/reviews"): "listOwnReviews",
    ("post", "/v1/merchant/reviews/{order_id}/approve"): "approveOwnReview",
    ("post", "/v1/merchant/reviews/{order_id}/refund"): "refundOwnReview",
    ("get", "/v1/merchant/risk/config"): "getOwnRiskConfig",
    ("put", "/v1/merchant/risk/config"): "putOwnRiskConfig",
    ("get", "/v1/merchant/risk/blocklist"): "listOwnBlocklist",
    ("post", "/v1/merchant/risk/blocklist"): "addOwnBlock",
    ("delete", "/v1/merchant/risk/blocklist/{entry_id}"): "removeOwnBlock",
    ("get", "/v1/risk/reviews"): "listReviews",
    ("post", "/v1/risk/reviews/{order_id}/approve"): "approveReview",
    ("post", "/v1/risk/reviews/{order_id}/refund"): "refundReview",
    ("get", "/v1/risk/config/{merchant_id}"): "getRiskConfig",
    ("get", "/v1/risk/blocklist"): "listBlocklist",
    ("post", "/v1/risk/blocklist"): "addBlock",
    ("delete", "/v1/risk/blocklist/{entry_id}"): "removeBlock",
    ("get", "/v1/analytics/heatmap"): "getSalesHeatmap",
    ("get", "/v1/analytics/sku-daily"): "getSkuDailyVolume",
    ("get", "/v1/analytics/repeat"): "getRepeatPurchases",
    ("get", "/v1/analytics/cohorts"): "getWalletCohorts",
    ("get", "/v1/analytics/fulfilment"): "getFulfilmentTime",
    ("get", "/v1/analytics/providers"): "getProviderStats",
    ("get", "/v1/analytics/refunds"): "getRefundReasons",
}


@pytest.fixture(scope="module")
def document(shop: Shop) -> dict[str, Any]:
    response = shop.api.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_operation_ids_are_stable_readable_and_unique(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in _operations(document)}
    assert ids == OPERATIONS
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i) for i in ids.values())


def test_every_operation_has_a_typed_success_body(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert len(success) == 1, (method, path, success)
        ((code, response),) = success.items()
        # JSON, or (an order's server-sent events) a text/event-stream.
        content = response["content"]
        schema = content["application/json" if "application/json" in content else "text/event-stream"][
            "schema"
        ]
        # One model, or (an order read: the operator's view or the public one) a choice of models.
        typed = "$ref" in schema or "type" in schema or all("$ref" in s for s in schema.get("anyOf", [{}]))
        assert typed, (method, path, code, schema)
        assert schema != {}


def test_every_declared_error_is_a_problem(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert "500" in errors, (method, path)
        for code, response in errors.items():
            assert set(response["content"]) == {PROBLEM}, (method, path, code)
            assert response["content"][PROBLEM]["schema"] == {"$ref": PROBLEM_REF}, (method, path, code)
            assert response["description"], (method, path, code)
    # Every operation that takes input can refuse it; FastAPI's own 422 body is never advertised.
    for method, path, op in _operations(document):
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in op["responses"], (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_limited_and_unavailable_answers_declare_their_headers(document: dict[str, Any]) -> None:
    declared = {
        (method, path, code): set(response.get("headers", {}))
        for method, path, op in _operations(document)
        for code, response in op["responses"].items()
        if code in ("429", "503")
    }
    limits = {"Retry-After", "RateLimit", "RateLimit-Policy"}
    limits |= {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
    # Every 429 (quotes, and every route a merchant API key is counted on) carries the limits; every 503
    # says when to retry.
    assert declared[("post", "/v1/quotes", "429")] == limits
    assert {k: v for k, v in declared.items() if k[2] == "429"} == {
        k: limits for k in declared if k[2] == "429"
    }
    assert {k: v for k, v in declared.items() if k[2] == "503"} == {
        k: {"Retry-After"} for k in declared if k[2] == "503"
    }
    assert ("get", "/v1/orders", "429") in declared


def test_every_operation_declares_405_with_allow(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        assert set(op["responses"]["405"]["headers"]) == {"Allow"}, (method, path)


def test_the_problem_schema_is_rfc_9457_with_our_field_list(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "errors"} <= set(problem["properties"])
    assert set(problem["required"]) == {"title", "status", "detail"}
    field_error = _resolve(document, problem["properties"]["errors"])
    assert field_error["items"] == {"$ref": "#/components/schemas/FieldError"}


def test_every_ref_resolves_and_no_schema_is_untyped(document: dict[str, Any]) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                _lookup(document, node["$ref"])
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document, "#")
    for name, schema in document["components"]["schemas"].items():
        for prop, sub in schema.get("properties", {}).items():
            assert sub != {}, f"{name}.{prop} has no type"


def test_the_bodies_the_gateway_sends_conform_to_the_document(document: dict[str, Any], shop: Shop) -> None:
    buyer = dev_wallet(10)
    created = shop.quote(buyer, sku="genshin-60", token="tUSDC")
    _conforms(document, "post", "/v1/quotes", created)
    quote = created.json()
    shop.pay(buyer, quote)
    shop.wait_for(quote["order_id"], "settled")  # a settled order fills every optional part

    _conforms(document, "get", "/v1/orders/{order_id}", shop.api.get(f"/v1/orders/{quote['order_id']}"))
    _conforms(document, "get", "/v1/catalogue", shop.api.get("/v1/catalogue"))
    _conforms(document, "get", "/v1/health", shop.api.get("/v1/health"))
    _conforms(document, "get", "/v1/orders/{order_id}", shop.api.get("/v1/orders/0x" + "0e" * 32))
    _conforms(document, "get", "/v1/orders/{order_id}", shop.api.get("/v1/orders/0x12"))
    _conforms(document, "post", "/v1/quotes", shop.quote(buyer, sku="no-such-sku"))
    _conforms(
        document, "post", "/v1/providers/{provider}/callback", shop.api.post("/v1/providers/x/callback")
    )


# ---------------------------------------------------------------------------------------- a tiny client


def _lookup(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert part in node, f"unresolved {ref}"
        node = node[part]
    assert isinstance(node, dict)
    return node


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``$ref`` followed and a nullable ``anyOf: [X, null]`` reduced to X."""
    while "$ref" in schema:
        schema = _lookup(document, schema["$ref"])
    variants = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(variants) == 1:
        return _resolve(document, variants[0])
    return schema


def _conforms(document: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    """The response's status is declared for the operation and its body matches the declared schema."""
    declared = document["paths"][path][method]["responses"]
    code = str(response.status_code)
    assert code in declared, f"{method} {path} answered {code}, which it does not declare"
    media = PROBLEM if code[0] in "45" else "application/json"
    assert response.headers["content-type"].startswith(media)
    _check(document, declared[code]["content"][media]["schema"], response.json(), f"{method} {path} {code}")


def _check(document: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    if "$ref" in schema:
        _check(document, _lookup(document, schema["$ref"]), value, where)
        return
    if "anyOf" in schema:
        failures = []
        for variant in schema["anyOf"]:
            try:
                _check(document, variant, value, where)
                return
            except AssertionError as exc:
                failures.append(str(exc))
        raise AssertionError(f"{where}: {value!r} matches no variant: {failures}")
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    kind = schema.get("type")
    python = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None:
        assert isinstance(value, python[kind]), f"{where}: {value!r} is not {kind}"
        assert not (kind in ("integer", "number") and isinstance(value, bool)), where
    if kind == "string" and "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{where}: {value!r} !~ {schema['pattern']}"
    if kind == "array":
        for index, item in enumerate(value):
            _check(document, schema.get("items", {}), item, f"{where}[{index}]")
    if kind == "object":
        properties = schema.get("properties", {})
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: missing {missing}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _check(document, properties[key], item, f"{where}.{key}")
            else:
                assert extra is not False, f"{where}: undeclared property {key!r}"
                if isinstance(extra, dict):
                    _check(document, extra, item, f"{where}.{key}")


def test_the_conformance_check_notices_an_undeclared_property(document: dict[str, Any], shop: Shop) -> None:
    """The checker above is strict enough to matter: a body with an extra field or a wrong type fails."""
    body = shop.api.get("/v1/catalogue").json()
    schema = document["paths"]["/v1/catalogue"]["get"]["responses"]["200"]["content"]["application/json"]
    with pytest.raises(AssertionError, match="undeclared property 'colour'"):
        _check(document, schema["schema"], {**body, "colour": "red"}, "catalogue")
    with pytest.raises(AssertionError, match="is not integer"):
        _check(document, schema["schema"], {**body, "chain_id": "1"}, "catalogue")
    assert_problem(shop.api.get("/v1/orders/0x12"), 422, "path.order_id")

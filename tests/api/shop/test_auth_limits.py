"""Who may call the API and how much: tokens (the integration's name in the log, never the
token), the body's size, the items in a request, each token's rate, and bad input answered
per field with nothing written."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from bot.settings import SettingsError, load_settings
from shopapi.models import MAX_ITEMS
from shopapi.server import MAX_BODY_BYTES
from store import Store
from tests.api.shop.conftest import AUTH, ERP_TOKEN, POS_TOKEN, dump

CUSTOMER = {"customers": [{"customer_id": 9100, "name": "Ola", "email": "ola@example.com"}]}


async def test_no_token_or_a_wrong_one_is_401_and_the_log_names_the_integration_never_the_token(
    api: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopapi")
    before = await dump(store)
    wrong = ERP_TOKEN[:-1] + "X"
    for headers in (
        {},
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": f"Basic {ERP_TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        r = await api.post("/api/customers", json=CUSTOMER, headers=headers)
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert await r.json() == {
            "errors": [
                {
                    "field": "Authorization",
                    "message": "a bearer token of this shop's API_TOKENS is needed",
                }
            ]
        }
    assert await dump(store) == before
    r = await api.post(
        "/api/customers", json=CUSTOMER, headers={"Authorization": f"Bearer {POS_TOKEN}"}
    )
    assert (r.status, await r.json()) == (200, {"received": 1, "changed": 1})
    # A customer changes no order line: no follow-on work was waited for.
    assert r.headers["Server-Timing"].startswith("total;dur=")
    assert r.headers["Server-Timing"].endswith(", follow-on;dur=0.0")
    lines = [rec.getMessage() for rec in caplog.records]
    assert [line.split(":")[0] for line in lines] == [
        "api POST /api/customers",
        "api POST /api/customers",
        "api POST /api/customers",
        "api POST /api/customers",
        "api POST /api/customers by pos",
    ]
    assert lines[0].endswith("401 (no token)") and lines[1].endswith("401 (wrong token)")
    assert all(t not in text for t in (ERP_TOKEN, POS_TOKEN, wrong) for text in [caplog.text])


async def test_a_body_over_the_limit_is_413_and_writes_nothing(api: Any, store: Store) -> None:
    before = await dump(store)
    big = {"customers": [{**CUSTOMER["customers"][0], "name": "x" * MAX_BODY_BYTES}]}
    r = await api.post("/api/customers", data=io.BytesIO(json.dumps(big).encode()), headers=AUTH)
    assert (r.status, await r.json()) == (
        413,
        {"errors": [{"field": "body", "message": f"larger than {MAX_BODY_BYTES:,} bytes"}]},
    )

    # Sent in chunks without a length: counted as it arrives.
    async def chunks() -> Any:
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    r = await api.post("/api/customers", data=chunks(), headers=AUTH)
    assert r.status == 413
    assert await dump(store) == before


async def test_more_items_than_the_limit_and_bad_fields_are_422_per_field(
    api: Any, store: Store
) -> None:
    before = await dump(store)
    many = {
        "counts": [{"sku": f"SKU-{i}", "on_hand": 1} for i in range(MAX_ITEMS + 1)],
    }
    r = await api.post("/api/stock", json=many, headers=AUTH)
    assert (r.status, await r.json()) == (
        422,
        {"errors": [{"field": "counts", "message": f"more than {MAX_ITEMS:,} items"}]},
    )
    bad = {
        "orders": [
            {
                "order_number": "12",
                "customer_id": "1",
                "placed_at": "2026-11-26 10:00",
                "lines": [{"sku": "KET\t0001", "qty": 0, "colour": "red"}],
            },
            {
                "order_number": "990010",
                "customer_id": 1,
                "placed_at": "2026-11-28T10:00:00Z",
                "lines": [],
            },
        ]
    }
    r = await api.post("/api/orders", json=bad, headers=AUTH)
    assert (r.status, await r.json()) == (
        422,
        {
            "errors": [
                {
                    "field": "orders[0].order_number",
                    "message": "4 to 10 ASCII digits (what the bot reads in a message): '12'",
                },
                {"field": "orders[0].customer_id", "message": "not a whole number"},
                {
                    "field": "orders[0].placed_at",
                    "message": "not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM)",
                },
                {
                    "field": "orders[0].lines[0].sku",
                    "message": "control character U+0009 (tab) at character 4",
                },
                {"field": "orders[0].lines[0].qty", "message": "must be at least 1, got 0"},
                {"field": "orders[0].lines[0].colour", "message": "unknown field"},
                {
                    "field": "orders[1].placed_at",
                    "message": "in the future (more than a day ahead of this clock):"
                    " '2026-11-28T10:00:00Z'",
                },
                {"field": "orders[1].lines", "message": "at least 1 item"},
            ]
        },
    )
    twice = {
        "customers": [
            CUSTOMER["customers"][0],
            {**CUSTOMER["customers"][0], "name": "Other"},
        ]
    }
    r = await api.post("/api/customers", json=twice, headers=AUTH)
    assert (r.status, await r.json()) == (
        422,
        {
            "errors": [
                {
                    "field": "customers[1]",
                    "message": "duplicate id 9100 with different content (first at customers[0])",
                }
            ]
        },
    )
    for raw, status, message in (
        (
            "{",
            400,
            "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("[]", 422, "must be a JSON object"),
    ):
        r = await api.post("/api/customers", data=raw, headers=AUTH)
        assert (r.status, await r.json()) == (
            status,
            {"errors": [{"field": "body", "message": message}]},
        )
    assert await dump(store) == before


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("", "API_TOKENS: must be set when API_PORT is: name:token,name:token"),
        (
            "erp:short",
            "API_TOKENS: the token of erp must be at least 32 characters without spaces, e.g."
            " from python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        ),
        (f"erp:{ERP_TOKEN},erp:{POS_TOKEN}", "API_TOKENS: the name erp is given twice"),
        (
            ERP_TOKEN,
            "API_TOKENS: entry 1: expected name:token with a name of 1-64 letters, digits,"
            " '_', '.' or '-'",
        ),
    ],
)
def test_bad_api_tokens_stop_start_up_with_one_line_naming_the_setting(
    tokens: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"API_PORT": "8081", "API_TOKENS": tokens})
    assert str(caught.value) == message
    assert ERP_TOKEN not in str(caught.value) and POS_TOKEN not in str(caught.value)

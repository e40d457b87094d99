"""Shopify webhooks through the adapter's aiohttp routes onto a real store (both backends):
the store's rows after each delivery, exactly; refused deliveries write nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shopapi.shopify import FOLLOW_ON, add_shopify_routes
from store import Store
from store.backorders import set_stock
from store.master import CustomerIn, ProductIn, upsert_customer, upsert_product
from tests.api.shopify_helpers import (  # noqa: F401 (fixtures)
    LEVEL,
    PRODUCT,
    SECRET,
    db_url,
    deliver,
    dump,
    empty_sqlite_template,
    fulfillment,
    order,
)

PLACED = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # 2026-11-20T19:00:00-05:00


class FollowOns:
    """The follow-on's runs, counted once the webhook's background run has ended."""

    def __init__(self) -> None:
        self.app: web.Application | None = None
        self._runs = 0

    async def __call__(self) -> None:
        self._runs += 1

    async def runs(self) -> int:
        assert self.app is not None
        await self.app[FOLLOW_ON].idle()
        return self._runs


@pytest.fixture
def follow_ons() -> FollowOns:
    return FollowOns()


@pytest.fixture
async def client(store: Store, follow_ons: FollowOns) -> AsyncIterator[TestClient]:
    async with store.begin() as conn:
        for sku, price in (("IPOD2008PINK", 19900), ("IPOD2008BLACK", 10200)):
            await upsert_product(conn, ProductIn(sku, f"iPod {sku[-4:]}", "players", price, "USD"))
        await set_stock(conn, "IPOD2008PINK", 1)
        await upsert_customer(conn, CustomerIn(7, "Ann", "ann@example.com", None, "10115", "de"))
    app = web.Application()
    add_shopify_routes(app, store=store, secret=SECRET, follow_on=follow_ons)
    follow_ons.app = app
    async with TestClient(TestServer(app)) as c:
        yield c


CUSTOMER_8 = (8, "John Smith", "john@example.com", "555-555-SHIP", "40003", "en")
ORDER_ROW = ("10234", 8, PLACED, "USD", False)
# PINK: the one unit in stock allocated at once; BLACK: none in stock, both units wait.
LINES = [
    ("10234", 1, "IPOD2008PINK", 1, 1, 0, 0, 0, 19900),
    ("10234", 2, "IPOD2008BLACK", 2, 0, 0, 0, 2, 10200),
]


async def test_orders_create_places_the_order_for_a_new_customer_and_a_replay_doubles_nothing(
    client: TestClient, store: Store, follow_ons: FollowOns
) -> None:
    status, body = await deliver(client, "orders/create", order(), webhook_id="w-1")
    assert (status, body) == (200, {"status": "applied", "detail": "order 10234", "changed": True})
    state = await dump(store)
    assert state["customers"] == [
        (7, "Ann", "ann@example.com", None, "10115", "de"),
        CUSTOMER_8,
    ]
    assert state["orders"] == [ORDER_ROW]
    assert state["order_lines"] == LINES
    assert state["stock"] == [("IPOD2008BLACK", 0, 0), ("IPOD2008PINK", 1, 1)]
    assert state["shopify_orders"] == [(820982911946154508, "10234")]
    assert state["shopify_webhooks"] == [("w-1", "orders/create")]
    assert await follow_ons.runs() == 1

    status, body = await deliver(client, "orders/create", order(), webhook_id="w-1")
    assert (status, body["status"], body["changed"]) == (200, "duplicate", False)
    # The same order under another delivery id (orders/updated with nothing new): no change.
    status, body = await deliver(client, "orders/updated", order(), webhook_id="w-2")
    assert (status, body["status"], body["changed"]) == (200, "applied", False)
    after = await dump(store)
    assert after == state | {
        "shopify_webhooks": [("w-1", "orders/create"), ("w-2", "orders/updated")]
    }
    assert await follow_ons.runs() == 1


async def test_the_customer_is_found_by_e_mail_in_any_case_and_left_as_it_is(
    client: TestClient, store: Store
) -> None:
    payload = order(order_number=None, name="#55501")
    payload["customer"]["email"] = "ANN@Example.com"
    status, _ = await deliver(client, "orders/create", payload)
    assert status == 200
    state = await dump(store)
    assert state["customers"] == [(7, "Ann", "ann@example.com", None, "10115", "de")]
    assert state["orders"] == [("55501", 7, PLACED, "USD", False)]


async def test_a_wrong_or_missing_signature_is_401_and_writes_nothing(
    client: TestClient, store: Store, follow_ons: FollowOns
) -> None:
    before = await dump(store)
    raw = json.dumps(order()).encode()
    for hmac in ("", "not base64 at all!", "c2lnbmF0dXJl"):
        status, body = await deliver(client, "orders/create", None, body=raw, hmac=hmac)
        assert (status, body) == (401, {"error": "X-Shopify-Hmac-Sha256: missing or wrong"})
    # Signed with another secret; and a body changed after signing.
    status, _ = await deliver(client, "orders/create", order(), secret="another-secret")
    assert status == 401
    from shopapi.shopify import signature

    status, _ = await deliver(
        client, "orders/create", None, body=raw + b" ", hmac=signature(SECRET, raw)
    )
    assert status == 401
    assert await dump(store) == before
    assert await follow_ons.runs() == 0


MALFORMED = [
    ("orders/create", b"{not json", "the body is not JSON"),
    ("orders/create", [1, 2], "the body: expected a JSON object"),
    ("orders/create", {"id": 1}, "email: the order has no e-mail address"),
    ("orders/create", order(line_items=None), "line_items: expected a list"),
    ("orders/create", order(order_number=12, name="#12"), "order_number: 4 to 10 ASCII"),
    ("orders/create", order(id="820982911946154508"), "id: expected a positive whole number"),
    ("orders/create", order(created_at="yesterday"), "placed_at: not a date"),
    ("orders/create", order(customer={"email": "no-at-sign"}), "customer.email: not an"),
    ("products/create", {"id": 1, "variants": "x"}, "variants: expected a list"),
    ("inventory_levels/update", dict(LEVEL, available="6"), "available: expected a whole"),
    ("fulfillments/create", fulfillment(order_id=None), "order_id: expected a positive"),
    ("orders/paid", order(), "X-Shopify-Topic: not a topic this endpoint takes"),
]


async def test_a_malformed_delivery_is_400_with_its_reason_and_writes_nothing(
    client: TestClient, store: Store
) -> None:
    before = await dump(store)
    for topic, payload, message in MALFORMED:
        raw = payload if isinstance(payload, bytes) else None
        status, body = await deliver(client, topic, None if raw else payload, body=raw)
        assert status == 400
        assert body["error"].startswith(message), body
    assert await dump(store) == before


async def test_bad_quantities_and_prices_are_400(client: TestClient, store: Store) -> None:
    before = await dump(store)
    for change, message in (
        ({"quantity": 0}, "line_items[0].qty: must be from 1 to 1,000,000, got 0"),
        ({"quantity": "1"}, "line_items[0].qty: not a whole number in ASCII digits: '\"1\"'"),
        ({"price": "19.999"}, "line_items[0].price: more decimals than USD has"),
        ({"price": "abc"}, "line_items[0].price: not a decimal amount: 'abc'"),
        ({"sku": "X" * 33}, "line_items[0].sku: longer than 32 characters (33)"),
    ):
        payload = order()
        payload["line_items"][0].update(change)
        status, body = await deliver(client, "orders/create", payload)
        assert (status, body["error"]) == (400, message)
    assert await dump(store) == before


async def test_a_missing_webhook_id_is_400(client: TestClient, store: Store) -> None:
    from shopapi.shopify import PATH, signature

    raw = json.dumps(order()).encode()
    response = await client.post(
        PATH,
        data=raw,
        headers={
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": signature(SECRET, raw),
        },
    )
    assert response.status == 400
    assert (await response.json())["error"].startswith("X-Shopify-Webhook-Id: missing")
    assert (await dump(store))["orders"] == []


async def test_an_order_of_gift_cards_only_is_ignored_and_its_id_kept(
    client: TestClient, store: Store, follow_ons: FollowOns
) -> None:
    payload = order()
    payload["line_items"] = [payload["line_items"][1]]
    status, body = await deliver(client, "orders/create", payload, webhook_id="g-1")
    assert (status, body) == (
        200,
        {"status": "ignored", "detail": "no line item has a SKU", "changed": False},
    )
    state = await dump(store)
    assert state["orders"] == [] and state["shopify_webhooks"] == [("g-1", "orders/create")]
    assert await follow_ons.runs() == 0


async def test_a_store_refusal_is_422_and_the_same_delivery_applies_once_it_can(
    client: TestClient, store: Store
) -> None:
    """A fulfillment before its order: refused, its id not kept, so Shopify's retry works."""
    before = await dump(store)
    status, body = await deliver(client, "fulfillments/create", fulfillment(), webhook_id="f-1")
    assert (status, body) == (
        422,
        {"error": "no order with Shopify id 820982911946154508 (not received yet?)"},
    )
    assert await dump(store) == before
    assert (await deliver(client, "orders/create", order()))[0] == 200
    status, body = await deliver(client, "fulfillments/create", fulfillment(), webhook_id="f-1")
    assert (status, body["detail"], body["changed"]) == (200, "shopify-123456: shipped", True)
    state = await dump(store)
    assert state["shipments"] == [("shopify-123456", "UPS", "1Z2345", date(2026, 11, 21))]
    assert state["shipment_lines"] == [("shopify-123456", 1, 1)]
    assert state["order_lines"] == [
        ("10234", 1, "IPOD2008PINK", 1, 0, 1, 0, 0, 19900),
        LINES[1],
    ]
    assert state["stock"] == [("IPOD2008BLACK", 0, 0), ("IPOD2008PINK", 0, 0)]

    # Shopify adds the tracking number later in fulfillments/update; a replay changes nothing.
    status, body = await deliver(
        client,
        "fulfillments/update",
        fulfillment(tracking_company="DHL", tracking_number="JD0001"),
        webhook_id="f-2",
    )
    assert (status, body["detail"]) == (200, "shopify-123456: tracking updated")
    status, body = await deliver(client, "fulfillments/create", fulfillment(), webhook_id="f-1")
    assert body["status"] == "duplicate"
    after = await dump(store)
    assert after["shipments"] == [("shopify-123456", "DHL", "JD0001", date(2026, 11, 21))]
    assert after["order_lines"] == state["order_lines"]


async def test_shipping_more_than_allocated_is_422_and_other_statuses_change_nothing(
    client: TestClient, store: Store
) -> None:
    assert (await deliver(client, "orders/create", order()))[0] == 200
    before = await dump(store)
    black = fulfillment(id=9)
    black["line_items"][0].update(sku="IPOD2008BLACK", quantity=1)
    status, body = await deliver(client, "fulfillments/create", black)
    assert (status, body) == (422, {"error": "line 2 has only 0 allocated, cannot ship 1"})
    for state in ("pending", "cancelled", "failure"):
        status, body = await deliver(client, "fulfillments/update", fulfillment(status=state))
        assert (status, body["status"]) == (200, "ignored")
    assert {k: v for k, v in (await dump(store)).items() if k != "shopify_webhooks"} == {
        k: v for k, v in before.items() if k != "shopify_webhooks"
    }


async def test_orders_cancelled_and_a_line_removed_by_an_edit(
    client: TestClient, store: Store
) -> None:
    assert (await deliver(client, "orders/create", order()))[0] == 200
    edited = order()
    edited["line_items"][2]["current_quantity"] = 0
    status, body = await deliver(client, "orders/updated", edited)
    assert (status, body["changed"]) == (200, True)
    assert (await dump(store))["order_lines"] == [
        LINES[0],
        ("10234", 2, "IPOD2008BLACK", 2, 0, 0, 2, 0, 10200),
    ]
    status, body = await deliver(
        client,
        "orders/cancelled",
        order(cancelled_at="2026-11-22T10:00:00-05:00", cancel_reason="customer"),
    )
    assert (status, body["changed"]) == (200, True)
    state = await dump(store)
    assert state["orders"] == [("10234", 8, PLACED, "USD", True)]
    assert state["order_lines"] == [
        ("10234", 1, "IPOD2008PINK", 1, 0, 0, 1, 0, 19900),
        ("10234", 2, "IPOD2008BLACK", 2, 0, 0, 2, 0, 10200),
    ]
    # The unit allocated to the cancelled line is free again.
    assert state["stock"] == [("IPOD2008BLACK", 0, 0), ("IPOD2008PINK", 1, 0)]
    # Cancelling an order Shopify knows and the store does not: 422 (the create may come).
    status, body = await deliver(client, "orders/cancelled", order(order_number=99999))
    assert (status, body) == (422, {"error": "no order 99999"})


async def test_inventory_levels_set_stock_through_the_products_item_map(
    client: TestClient, store: Store
) -> None:
    # Before the product's webhook the item has no SKU: 422, nothing kept.
    status, body = await deliver(client, "inventory_levels/update", LEVEL)
    assert (status, body) == (
        422,
        {
            "error": f"inventory item {LEVEL['inventory_item_id']} has no SKU yet"
            " (products/create not received?)"
        },
    )
    assert (await dump(store))["shopify_inventory_levels"] == []
    assert (await deliver(client, "products/create", PRODUCT))[0] == 200
    assert (await dump(store))["shopify_inventory_items"] == [(271878346596884015, "IPOD2008BLACK")]
    # The order's two BLACK units wait; Shopify's available has them taken off already.
    assert (await deliver(client, "orders/create", order()))[0] == 200
    status, body = await deliver(client, "inventory_levels/update", dict(LEVEL, available=-2))
    assert (status, body["detail"], body["changed"]) == (200, "IPOD2008BLACK: 0 on hand", False)
    # Five arrive at one location and one at another: 4 + 1 + the 2 held = 7 on hand, 2 of
    # them allocated to the waiting line.
    await deliver(client, "inventory_levels/update", dict(LEVEL, available=4))
    status, body = await deliver(
        client, "inventory_levels/update", dict(LEVEL, location_id=555, available=1)
    )
    assert (status, body["detail"]) == (200, "IPOD2008BLACK: 7 on hand")
    state = await dump(store)
    assert state["shopify_inventory_levels"] == [
        (271878346596884015, 555, 1),
        (271878346596884015, 24826418, 4),
    ]
    assert state["stock"] == [("IPOD2008BLACK", 7, 2), ("IPOD2008PINK", 1, 1)]
    assert state["order_lines"][1] == ("10234", 2, "IPOD2008BLACK", 2, 2, 0, 0, 0, 10200)
    # Untracked inventory (available null) changes nothing.
    status, body = await deliver(client, "inventory_levels/update", dict(LEVEL, available=None))
    assert (status, body["status"]) == (200, "ignored")


async def test_the_same_delivery_many_times_at_once_is_applied_once(
    client: TestClient, store: Store, follow_ons: FollowOns
) -> None:
    results = await asyncio.gather(
        *(deliver(client, "orders/create", order(), webhook_id="same") for _ in range(20))
    )
    assert sorted(body["status"] for _, body in results) == ["applied"] + ["duplicate"] * 19
    state = await dump(store)
    assert state["orders"] == [ORDER_ROW] and state["order_lines"] == LINES
    assert await follow_ons.runs() == 1


async def test_orders_of_one_new_e_mail_at_once_create_one_customer(
    client: TestClient, store: Store
) -> None:
    payloads = [order(id=1000 + i, order_number=20000 + i) for i in range(12)]
    for p in payloads:
        p["line_items"] = [p["line_items"][2]]
    results = await asyncio.gather(*(deliver(client, "orders/create", p) for p in payloads))
    assert [status for status, _ in results] == [200] * 12
    state = await dump(store)
    assert state["customers"][1:] == [CUSTOMER_8]
    assert sorted(r[:2] for r in state["orders"]) == [(str(20000 + i), 8) for i in range(12)]


async def test_a_body_over_the_limit_is_413_before_its_signature_is_checked(
    client: TestClient, store: Store
) -> None:
    from shopapi.shopify import MAX_BODY

    before = await dump(store)
    raw = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    status, body = await deliver(client, "orders/create", None, body=raw)
    assert (status, body) == (413, {"error": f"body larger than {MAX_BODY:,} bytes"})
    assert await dump(store) == before

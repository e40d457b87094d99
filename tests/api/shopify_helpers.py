"""Shopify webhook payloads written after the examples in Shopify's webhook reference
(orders/create, fulfillments/create, products/create, inventory_levels/update), trimmed to
the fields the adapter reads plus a few it must ignore, and a signed delivery helper."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from shopapi.shopify import PATH, signature
from store import Store, open_store
from store.schema import (
    customers,
    order_lines,
    orders,
    shipment_lines,
    shipments,
    shopify_inventory_items,
    shopify_inventory_levels,
    shopify_orders,
    shopify_webhooks,
    stock,
)
from tests.pg import Databases, sqlite_url

SECRET = "shpss_0123456789abcdef0123456789abcdef"

ORDER: dict[str, Any] = {
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "app_id": None,
    "browser_ip": None,
    "buyer_accepts_marketing": True,
    "cancel_reason": None,
    "cancelled_at": None,
    "closed_at": None,
    "confirmed": False,
    "contact_email": "jon@example.com",
    "created_at": "2026-11-20T19:00:00-05:00",
    "currency": "USD",
    "customer_locale": "en",
    "email": "jon@example.com",
    "financial_status": "voided",
    "fulfillment_status": "pending",
    "name": "#10234",
    "note": None,
    "number": 9234,
    "order_number": 10234,
    "phone": None,
    "tags": "tag1, tag2",
    "test": True,
    "total_price": "403.00",
    "billing_address": {
        "first_name": "Steve",
        "address1": "123 Shipping Street",
        "phone": "555-555-SHIP",
        "city": "Shippington",
        "zip": "40003",
        "province": "Kentucky",
        "country": "United States",
        "last_name": "Shipper",
    },
    "customer": {
        "id": 115310627314723954,
        "email": "john@example.com",
        "created_at": None,
        "updated_at": None,
        "first_name": "John",
        "last_name": "Smith",
        "state": "disabled",
        "note": None,
        "verified_email": True,
        "phone": None,
        "currency": "USD",
        "default_address": {
            "id": 715243470612851245,
            "customer_id": 115310627314723954,
            "first_name": None,
            "address1": "123 Elm St.",
            "city": "Ottawa",
            "zip": "K2H7A8",
            "country": "Canada",
            "default": True,
        },
    },
    "line_items": [
        {
            "id": 866550311766439020,
            "admin_graphql_api_id": "gid://shopify/LineItem/866550311766439020",
            "current_quantity": 1,
            "fulfillable_quantity": 1,
            "fulfillment_status": None,
            "gift_card": False,
            "grams": 567,
            "name": "IPod Nano - 8GB",
            "price": "199.00",
            "product_id": 632910392,
            "quantity": 1,
            "requires_shipping": True,
            "sku": "IPOD2008PINK",
            "title": "IPod Nano - 8GB",
            "variant_id": 808950810,
            "variant_title": None,
            "vendor": None,
        },
        {
            "id": 141249953214522974,
            "current_quantity": 0,
            "fulfillable_quantity": 0,
            "gift_card": True,
            "name": "Gift card",
            "price": "50.00",
            "product_id": 632910393,
            "quantity": 1,
            "sku": "",
            "title": "Gift card",
            "variant_id": 808950811,
        },
        {
            "id": 141249953214522975,
            "current_quantity": 2,
            "fulfillable_quantity": 2,
            "gift_card": False,
            "name": "IPod Nano - 8GB - Black",
            "price": "102.00",
            "product_id": 632910392,
            "quantity": 2,
            "sku": "IPOD2008BLACK",
            "title": "IPod Nano - 8GB",
            "variant_id": 457924702,
            "variant_title": "black",
        },
    ],
    "shipping_address": {
        "first_name": "Steve",
        "address1": "123 Shipping Street",
        "phone": "555-555-SHIP",
        "city": "Shippington",
        "zip": "40003",
        "province": "Kentucky",
        "country": "United States",
        "last_name": "Shipper",
    },
    "shipping_lines": [],
}

FULFILLMENT: dict[str, Any] = {
    "id": 123456,
    "order_id": 820982911946154508,
    "status": "success",
    "created_at": "2026-11-21T10:00:00-05:00",
    "service": None,
    "updated_at": "2026-11-21T10:00:00-05:00",
    "tracking_company": "UPS",
    "shipment_status": None,
    "location_id": None,
    "origin_address": None,
    "email": "jon@example.com",
    "destination": None,
    "line_items": [
        {
            "id": 866550311766439020,
            "variant_id": 808950810,
            "title": "IPod Nano - 8GB",
            "quantity": 1,
            "sku": "IPOD2008PINK",
            "variant_title": None,
            "fulfillment_status": None,
        }
    ],
    "tracking_number": "1Z2345",
    "tracking_numbers": ["1Z2345"],
    "tracking_url": "https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums=1Z2345",
    "tracking_urls": ["https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums=1Z2345"],
    "receipt": {},
    "name": "#10234.1",
    "admin_graphql_api_id": "gid://shopify/Fulfillment/123456",
}

PRODUCT: dict[str, Any] = {
    "admin_graphql_api_id": "gid://shopify/Product/788032119674292922",
    "body_html": "An example T-Shirt",
    "created_at": None,
    "handle": "example-t-shirt",
    "id": 788032119674292922,
    "product_type": "Shirts",
    "status": "active",
    "title": "Example T-Shirt",
    "variants": [
        {
            "admin_graphql_api_id": "gid://shopify/ProductVariant/642667041472713922",
            "barcode": None,
            "id": 642667041472713922,
            "inventory_item_id": 271878346596884015,
            "inventory_quantity": 75,
            "price": "19.99",
            "product_id": 788032119674292922,
            "sku": "ipod2008black",
            "title": "Small",
        },
        {
            "id": 757650484644203962,
            "inventory_item_id": 271878346596884016,
            "inventory_quantity": 50,
            "price": "19.99",
            "product_id": 788032119674292922,
            "sku": "",
            "title": "Medium",
        },
    ],
}

LEVEL: dict[str, Any] = {
    "inventory_item_id": 271878346596884015,
    "location_id": 24826418,
    "available": 6,
    "updated_at": "2026-11-21T19:00:00-05:00",
    "admin_graphql_api_id": "gid://shopify/InventoryLevel/24826418?inventory_item_id=271878346596884015",
}


def order(**changes: Any) -> dict[str, Any]:
    o = copy.deepcopy(ORDER)
    o.update(changes)
    return o


def fulfillment(**changes: Any) -> dict[str, Any]:
    f = copy.deepcopy(FULFILLMENT)
    f.update(changes)
    return f


_ids: Iterator[int] = iter(range(1, 10**9))


async def deliver(
    client: TestClient,
    topic: str,
    payload: Any,
    *,
    webhook_id: str | None = None,
    secret: str = SECRET,
    body: bytes | None = None,
    hmac: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST one webhook as Shopify does: the raw body signed, topic and id in headers."""
    raw = body if body is not None else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": hmac if hmac is not None else signature(secret, raw),
        "X-Shopify-Shop-Domain": "example.myshopify.com",
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Webhook-Id": webhook_id or f"b54557e4-bdd9-4b37-8a5f-{next(_ids):012d}",
        "X-Shopify-Triggered-At": "2026-11-21T00:00:00.000000Z",
    }
    response = await client.post(PATH, data=io.BytesIO(raw), headers=headers)
    return response.status, await response.json()


async def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the adapter may write, in a fixed order."""
    ol = order_lines.c
    queries = {
        "customers": select(
            customers.c.customer_id,
            customers.c.name,
            customers.c.email,
            customers.c.phone,
            customers.c.postcode,
            customers.c.language,
        ).order_by(customers.c.customer_id),
        "orders": select(
            orders.c.order_number,
            orders.c.customer_id,
            orders.c.placed_at,
            orders.c.currency,
            orders.c.cancelled_at.is_not(None),
        ).order_by(orders.c.order_number),
        "order_lines": select(
            orders.c.order_number,
            ol.line_no,
            ol.sku,
            ol.qty_ordered,
            ol.qty_allocated,
            ol.qty_shipped,
            ol.qty_cancelled,
            ol.qty_waiting,
            ol.unit_price_minor,
        )
        .select_from(order_lines.join(orders, orders.c.order_id == ol.order_id))
        .order_by(orders.c.order_number, ol.line_no),
        "shipments": select(
            shipments.c.shipment_id,
            shipments.c.carrier,
            shipments.c.tracking_number,
            shipments.c.shipped_on,
        ).order_by(shipments.c.shipment_id),
        "shipment_lines": select(shipment_lines.c.shipment_id, ol.line_no, shipment_lines.c.qty)
        .select_from(shipment_lines.join(order_lines, ol.line_id == shipment_lines.c.line_id))
        .order_by(shipment_lines.c.shipment_id, ol.line_no),
        "stock": select(stock.c.sku, stock.c.on_hand, stock.c.allocated).order_by(stock.c.sku),
        "shopify_webhooks": select(
            shopify_webhooks.c.webhook_id, shopify_webhooks.c.topic
        ).order_by(shopify_webhooks.c.webhook_id),
        "shopify_orders": select(shopify_orders).order_by(shopify_orders.c.shopify_order_id),
        "shopify_inventory_items": select(shopify_inventory_items).order_by(
            shopify_inventory_items.c.inventory_item_id
        ),
        "shopify_inventory_levels": select(shopify_inventory_levels).order_by(
            shopify_inventory_levels.c.inventory_item_id, shopify_inventory_levels.c.location_id
        ),
    }
    async with store.connect() as conn:
        return {name: [tuple(r) for r in await conn.execute(q)] for name, q in queries.items()}


@pytest.fixture(scope="session")
def empty_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated empty SQLite store, copied for each test (migrating takes a second)."""
    path = tmp_path_factory.mktemp("shop") / "empty.sqlite3"

    async def build() -> None:
        await (await open_store(sqlite_url(path))).close()

    asyncio.run(build())
    return path


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty migrated store of this test's own (the catalog is the test's)."""
    if backend == "sqlite":
        path = tmp_path / "shop.sqlite3"
        shutil.copyfile(request.getfixturevalue("empty_sqlite_template"), path)
        yield sqlite_url(path)
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("store"))
    try:
        yield url
    finally:
        databases.drop(name)

"""Each endpoint on the demo shop, both backends: the exact answer, the exact rows it wrote,
the follow-on work done (no marks left), and the same request again writing nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from store import Store
from store.links import read_link_code
from store.schema import (
    customers,
    follow_on_marks,
    order_lines,
    orders,
    product_alternatives,
    products,
    restock_date_changes,
    restocks,
    shipment_lines,
    shipments,
    stock,
)
from tests.api.shop.conftest import AUTH, dump
from tests.conftest import LINK_SECRET, START


async def post(api: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = await api.post(path, json=body, headers=AUTH)
    return r.status, await r.json()


async def replayed(api: Any, store: Store, path: str, body: dict[str, Any]) -> Any:
    """The same request again: its answer, after checking that it wrote nothing at all."""
    before = await dump(store)
    status, answer = await post(api, path, body)
    assert status == 200, answer
    assert await dump(store) == before
    return answer


async def rows(store: Store, query: Any) -> list[tuple[Any, ...]]:
    async with store.connect() as conn:
        return [tuple(r) for r in await conn.execute(query)]


async def marks_left(store: Store) -> int:
    async with store.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(follow_on_marks)) or 0)


def line_cols() -> tuple[Any, ...]:
    c = order_lines.c
    return (
        c.line_no,
        c.sku,
        c.qty_ordered,
        c.qty_allocated,
        c.qty_waiting,
        c.qty_cancelled,
        c.qty_shipped,
        c.projected_date,
        c.promised_date,
    )


async def lines_of(store: Store, number: str) -> list[tuple[Any, ...]]:
    return await rows(
        store,
        select(*line_cols())
        .join(orders, orders.c.order_id == order_lines.c.order_id)
        .where(orders.c.order_number == number)
        .order_by(order_lines.c.line_no),
    )


ORDERS = {
    "orders": [
        {
            "order_number": "990001",
            "customer_id": 2,
            "placed_at": "2026-11-26T09:00:00Z",
            "lines": [{"sku": "ket-0001", "qty": 2}, {"sku": "COF-0001", "qty": 1}],
        },
        {
            "order_number": "990002",
            "customer_id": 3,
            "placed_at": "2026-11-26T09:30:00+01:00",
            "priority": 0,
            "lines": [{"sku": "PRM-0001", "qty": 1, "unit_price_minor": 100}],
        },
    ]
}


async def test_orders_are_placed_allocated_projected_and_not_twice(api: Any, store: Store) -> None:
    async with store.connect() as conn:
        free_before = await conn.scalar(
            select(stock.c.on_hand - stock.c.allocated).where(stock.c.sku == "KET-0001")
        )
    assert free_before == 20
    assert await post(api, "/api/orders", ORDERS) == (200, {"received": 2, "changed": 2})
    assert await rows(
        store,
        select(orders.c.order_number, orders.c.customer_id, orders.c.placed_at, orders.c.currency)
        .where(orders.c.order_number.in_(["990001", "990002"]))
        .order_by(orders.c.order_number),
    ) == [
        ("990001", 2, datetime(2026, 11, 26, 9, 0, tzinfo=UTC), "EUR"),
        ("990002", 3, datetime(2026, 11, 26, 8, 30, tzinfo=UTC), "EUR"),
    ]
    ket, cof = await lines_of(store, "990001")
    assert ket[:7] == (1, "KET-0001", 2, 2, 0, 0, 0)
    assert cof[:7] == (2, "COF-0001", 1, 0, 1, 0, 0)
    # Dated by a restock of COF-0001 and promised that date; no follow-on work left behind.
    assert cof[7] is not None and cof[8] == cof[7]
    assert (await lines_of(store, "990002"))[0][:7] == (1, "PRM-0001", 1, 0, 1, 0, 0)
    async with store.connect() as conn:
        assert (
            await conn.scalar(
                select(stock.c.on_hand - stock.c.allocated).where(stock.c.sku == "KET-0001")
            )
            == 18
        )
    assert await marks_left(store) == 0
    assert await replayed(api, store, "/api/orders", ORDERS) == {"received": 2, "changed": 0}


async def test_an_order_number_again_with_other_lines_is_refused_and_nothing_is_written(
    api: Any, store: Store
) -> None:
    before = await dump(store)
    body = {
        "orders": [
            {**ORDERS["orders"][1], "order_number": "990003"},
            {**ORDERS["orders"][0], "order_number": "100001"},
        ]
    }
    assert await post(api, "/api/orders", body) == (
        409,
        {
            "errors": [
                {"field": "orders[1]", "message": "order 100001 exists with different content"}
            ]
        },
    )
    unknown = {"orders": [{**ORDERS["orders"][0], "customer_id": 77777}]}
    assert await post(api, "/api/orders", unknown) == (
        422,
        {"errors": [{"field": "orders[0]", "message": "unknown customer 77777"}]},
    )
    assert await dump(store) == before


async def test_products_and_alternatives(api: Any, store: Store) -> None:
    body = {
        "products": [
            {
                "sku": "new-0001",
                "name_en": "New Kettle",
                "name_de": "Neuer Wasserkocher",
                "category": "kettles",
                "price_minor": 4999,
                "currency": "eur",
                "alternatives": ["KET-0001", "NEW-0002"],
            },
            {
                "sku": "NEW-0002",
                "name_en": "Newer Kettle",
                "category": "kettles",
                "price_minor": 5999,
                "currency": "EUR",
                "backorderable": False,
            },
        ]
    }
    assert await post(api, "/api/products", body) == (200, {"received": 2, "changed": 3})
    p = products.c
    assert await rows(
        store,
        select(p.sku, p.name_en, p.name_de, p.price_minor, p.currency, p.active, p.backorderable)
        .where(p.sku.like("NEW-%"))
        .order_by(p.sku),
    ) == [
        ("NEW-0001", "New Kettle", "Neuer Wasserkocher", 4999, "EUR", True, True),
        ("NEW-0002", "Newer Kettle", None, 5999, "EUR", True, False),
    ]
    a = product_alternatives.c
    assert await rows(
        store, select(a.alt_sku, a.rank).where(a.sku == "NEW-0001").order_by(a.rank)
    ) == [("KET-0001", 0), ("NEW-0002", 1)]
    assert await replayed(api, store, "/api/products", body) == {"received": 2, "changed": 0}
    before = await dump(store)
    bad = {"products": [{**body["products"][1], "alternatives": ["NOPE-1"]}]}
    assert await post(api, "/api/products", bad) == (
        422,
        {"errors": [{"field": "products[0].alternatives", "message": "unknown SKU NOPE-1"}]},
    )
    assert await dump(store) == before


async def test_suppliers_and_customers(api: Any, store: Store) -> None:
    sup = {"suppliers": [{"supplier_id": "SUP-99", "name": "Api Supplies", "lead_days": 5}]}
    assert await post(api, "/api/suppliers", sup) == (200, {"received": 1, "changed": 1})
    cust = {
        "customers": [
            {
                "customer_id": 9001,
                "name": "Eva Api",
                "email": "eva@example.com",
                "postcode": "10117",
                "language": "de",
            },
            {"customer_id": 2, "name": "John Smith", "email": "john.new@example.com"},
        ]
    }
    assert await post(api, "/api/customers", cust) == (200, {"received": 2, "changed": 2})
    c = customers.c
    assert await rows(
        store,
        select(c.customer_id, c.name, c.email, c.postcode, c.language)
        .where(c.customer_id.in_([2, 9001]))
        .order_by(c.customer_id),
    ) == [
        (2, "John Smith", "john.new@example.com", None, "en"),
        (9001, "Eva Api", "eva@example.com", "10117", "de"),
    ]
    assert await replayed(api, store, "/api/customers", cust) == {"received": 2, "changed": 0}
    assert await replayed(api, store, "/api/suppliers", sup) == {"received": 1, "changed": 0}


async def test_stock_counts_fill_waiting_lines(api: Any, store: Store) -> None:
    waiting = (await lines_of(store, "100003"))[0]
    assert waiting[:5] == (1, "PRM-0001", 1, 0, 1)
    body = {"counts": [{"sku": "PRM-0001", "on_hand": 1}]}
    assert await post(api, "/api/stock", body) == (200, {"received": 1, "changed": 1})
    assert (await lines_of(store, "100003"))[0][:5] == (1, "PRM-0001", 1, 1, 0)
    assert await rows(
        store, select(stock.c.on_hand, stock.c.allocated).where(stock.c.sku == "PRM-0001")
    ) == [(1, 1)]
    assert await marks_left(store) == 0
    assert await replayed(api, store, "/api/stock", body) == {"received": 1, "changed": 0}
    before = await dump(store)
    assert await post(api, "/api/stock", {"counts": [{"sku": "PRM-0001", "on_hand": 0}]}) == (
        409,
        {
            "errors": [
                {
                    "field": "counts[0]",
                    "message": "PRM-0001: 0 on hand is less than the 1 units allocated",
                }
            ]
        },
    )
    assert await dump(store) == before


async def test_a_restock_is_created_moved_received_and_cancelled(api: Any, store: Store) -> None:
    body = {
        "restocks": [
            {
                "restock_id": "PO-API-1",
                "supplier_id": "SUP-01",
                "sku": "PRM-0001",
                "qty": 5,
                "expected_date": "2026-12-15",
            }
        ]
    }
    assert await post(api, "/api/restocks", body) == (200, {"received": 1, "changed": 1})
    assert (await lines_of(store, "100003"))[0][7] == date(2026, 12, 15)
    assert await replayed(api, store, "/api/restocks", body) == {"received": 1, "changed": 0}
    other = {"restocks": [{**body["restocks"][0], "qty": 6}]}
    assert await post(api, "/api/restocks", other) == (
        409,
        {
            "errors": [
                {
                    "field": "restocks[0]",
                    "message": "restock PO-API-1 exists with different content",
                }
            ]
        },
    )

    move = {"expected_date": "2026-12-28", "reason": "supplier's ship was late"}
    assert await post(api, "/api/restocks/PO-API-1/date", move) == (
        200,
        {"restock_id": "PO-API-1", "changed": True, "lines_moved": 1},
    )
    assert (await lines_of(store, "100003"))[0][7] == date(2026, 12, 28)
    r = restock_date_changes.c
    assert await rows(
        store, select(r.old_date, r.new_date, r.reason).where(r.restock_id == "PO-API-1")
    ) == [(date(2026, 12, 15), date(2026, 12, 28), "supplier's ship was late")]
    assert await marks_left(store) == 0
    assert await replayed(api, store, "/api/restocks/PO-API-1/date", move) == {
        "restock_id": "PO-API-1",
        "changed": False,
        "lines_moved": 0,
    }

    assert await post(api, "/api/restocks/PO-API-1/receive", {"qty": 4}) == (
        200,
        {"restock_id": "PO-API-1", "changed": True, "qty": 4, "allocated": 1, "to_free_stock": 3},
    )
    assert (await lines_of(store, "100003"))[0][:5] == (1, "PRM-0001", 1, 1, 0)
    assert await replayed(api, store, "/api/restocks/PO-API-1/receive", {"qty": 4}) == {
        "restock_id": "PO-API-1",
        "changed": False,
        "qty": 4,
        "allocated": 0,
        "to_free_stock": 0,
    }
    assert await post(api, "/api/restocks/PO-API-1/cancel", {}) == (
        409,
        {"errors": [{"field": "restock_id", "message": "restock PO-API-1 is received"}]},
    )
    assert await post(api, "/api/restocks/PO-000002/cancel", {"reason": "supplier closed"}) == (
        200,
        {"restock_id": "PO-000002", "changed": True},
    )
    assert await rows(
        store, select(restocks.c.status).where(restocks.c.restock_id == "PO-000002")
    ) == [("cancelled",)]
    assert await replayed(api, store, "/api/restocks/PO-000002/cancel", {}) == {
        "restock_id": "PO-000002",
        "changed": False,
    }
    assert await post(api, "/api/restocks/PO-NONE/receive", {}) == (
        404,
        {"errors": [{"field": "restock_id", "message": "unknown restock PO-NONE"}]},
    )


async def test_orders_and_lines_are_cancelled_once(api: Any, store: Store) -> None:
    assert await post(api, "/api/orders/100003/lines/2/cancel", {"reason": "customer asked"}) == (
        200,
        {"order_number": "100003", "changed": True, "cancelled_qty": 1},
    )
    assert (await lines_of(store, "100003"))[1][:6] == (2, "KET-0001", 1, 0, 0, 1)
    assert await replayed(api, store, "/api/orders/100003/lines/2/cancel", {}) == {
        "order_number": "100003",
        "changed": False,
        "cancelled_qty": 0,
    }
    assert await post(api, "/api/orders/100006/cancel", {}) == (
        200,
        {"order_number": "100006", "changed": True, "cancelled_qty": 2},
    )
    assert (await lines_of(store, "100006"))[0][:6] == (1, "COF-0001", 2, 0, 0, 2)
    assert await rows(
        store, select(orders.c.cancelled_at).where(orders.c.order_number == "100006")
    ) != [(None,)]
    assert await marks_left(store) == 0
    assert await replayed(api, store, "/api/orders/100006/cancel", {}) == {
        "order_number": "100006",
        "changed": False,
        "cancelled_qty": 0,
    }
    assert await post(api, "/api/orders/100003/lines/9/cancel", {}) == (
        404,
        {"errors": [{"field": "order_number", "message": "order 100003 has no line 9"}]},
    )
    assert await post(api, "/api/orders/99999999/cancel", {}) == (
        404,
        {"errors": [{"field": "order_number", "message": "no order 99999999"}]},
    )


async def test_an_order_is_shipped_with_carrier_and_tracking_once(api: Any, store: Store) -> None:
    body = {"shipment_id": "SH-API-1", "carrier": "DHL", "tracking_number": "JD0001"}
    assert await post(api, "/api/orders/100004/shipments", body) == (
        200,
        {"shipment_id": "SH-API-1", "changed": True, "units": 2},
    )
    s = shipments.c
    assert await rows(
        store,
        select(s.carrier, s.tracking_number, s.shipped_on).where(s.shipment_id == "SH-API-1"),
    ) == [("DHL", "JD0001", date(2026, 11, 26))]
    assert await rows(
        store, select(shipment_lines.c.qty).where(shipment_lines.c.shipment_id == "SH-API-1")
    ) == [(2,)]
    assert (await lines_of(store, "100004"))[0][:7] == (1, "KET-0001", 2, 0, 0, 0, 2)
    assert await replayed(api, store, "/api/orders/100004/shipments", body) == {
        "shipment_id": "SH-API-1",
        "changed": False,
        "units": 2,
    }
    assert await post(
        api, "/api/orders/100005/shipments", {"shipment_id": "SH-API-2", "carrier": "DHL"}
    ) == (
        409,
        {
            "errors": [
                {"field": "order_number", "message": "order 100005 has nothing allocated to ship"}
            ]
        },
    )


async def test_a_deep_link_for_a_customer_or_an_order(api: Any, store: Store) -> None:
    status, answer = await post(api, "/api/links", {"order_number": "100002", "days": 7})
    assert status == 200
    code = answer["code"]
    assert answer["url"] == f"https://t.me/shop_test_bot?start={code}"
    expires = START + timedelta(days=7)
    assert answer["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    link = read_link_code(LINK_SECRET, code)
    async with store.connect() as conn:
        order_id = await conn.scalar(
            select(orders.c.order_id).where(orders.c.order_number == "100002")
        )
    assert link is not None
    assert (link.customer_id, link.order_id, link.expires_at) == (1, order_id, expires)
    status, answer = await post(api, "/api/links", {"customer_id": 4})
    link = read_link_code(LINK_SECRET, answer["code"])
    assert link is not None
    assert (link.customer_id, link.order_id, link.expires_at) == (
        4,
        None,
        START + timedelta(days=30),
    )
    assert await post(api, "/api/links", {"customer_id": 77777}) == (
        422,
        {"errors": [{"field": "customer_id", "message": "no customer 77777"}]},
    )
    assert await post(api, "/api/links", {"customer_id": 1, "order_number": "100002"}) == (
        422,
        {
            "errors": [
                {"field": "body", "message": "give exactly one of customer_id and order_number"}
            ]
        },
    )


async def test_the_same_new_order_sent_many_times_at_once_is_placed_once(
    api: Any, store: Store
) -> None:
    one = {"orders": [ORDERS["orders"][0]]}
    answers = await asyncio.gather(*(post(api, "/api/orders", one) for _ in range(20)))
    assert (
        sorted(answers, key=lambda a: -a[1]["changed"])
        == [(200, {"received": 1, "changed": 1})] + [(200, {"received": 1, "changed": 0})] * 19
    )
    assert await rows(store, select(func.count()).where(orders.c.order_number == "990001")) == [
        (1,)
    ]
    assert len(await lines_of(store, "990001")) == 2
    assert await marks_left(store) == 0

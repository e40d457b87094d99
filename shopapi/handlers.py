"""The shop API's endpoints: each is the CSV import or admin command of the same name, through
the same store functions in one transaction, then the same follow-on work.

Batches (products, suppliers, stock, restocks, customers, orders) are idempotent by their ids
as the imports are: the same request again changes nothing and answers ``changed: 0``. The
commands on one restock, order or shipment are idempotent as the admin commands are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from shopapi import models as m
from shopapi.endpoints import ApiContext, Refused, add_endpoint, refused
from shopapi.openapi import Endpoint
from store.backorders import (
    NewLine,
    OrderIn,
    cancel_line,
    cancel_order,
    cancel_restock,
    change_restock_date,
    place_order,
    place_orders,
    receive_restock,
    set_stock,
    ship,
)
from store.errors import StoreError
from store.links import make_link_code
from store.master import (
    CustomerIn,
    ProductIn,
    add_restock,
    set_alternatives,
    upsert_customer,
    upsert_product,
    upsert_supplier,
)
from store.schema import customers, orders, stock

T = TypeVar("T")


async def _products(ctx: ApiContext, _: Any, body: m.ProductsIn) -> m.Applied:
    changed = 0
    where = "products"
    try:
        async with ctx.store.begin() as conn:
            # All products first, then the alternatives: one may name a product later in the
            # batch, as in an import file.
            for i, p in enumerate(body.products):
                where = f"products[{i}]"
                changed += await upsert_product(
                    conn,
                    ProductIn(
                        sku=p.sku,
                        name_en=p.name_en,
                        category=p.category,
                        price_minor=p.price_minor,
                        currency=p.currency,
                        active=p.active,
                        backorderable=p.backorderable,
                        name_de=p.name_de,
                        name_es=p.name_es,
                        name_ru=p.name_ru,
                    ),
                )
            for i, p in enumerate(body.products):
                where = f"products[{i}].alternatives"
                if p.alternatives is not None:
                    changed += await set_alternatives(conn, p.sku, list(p.alternatives))
    except StoreError as e:
        raise refused(e, where) from None
    return await _done(ctx, m.Applied(received=len(body.products), changed=changed), changed)


async def _suppliers(ctx: ApiContext, _: Any, body: m.SuppliersIn) -> m.Applied:
    async def one(conn: AsyncConnection, s: m.Supplier) -> int:
        return await upsert_supplier(conn, s.supplier_id, s.name, s.email, s.lead_days)

    changed = await _each(ctx, "suppliers", body.suppliers, one)
    return m.Applied(received=len(body.suppliers), changed=changed)


async def _stock(ctx: ApiContext, _: Any, body: m.StockIn) -> m.Applied:
    async def one(conn: AsyncConnection, count: m.StockCount) -> int:
        before = await conn.scalar(select(stock.c.on_hand).where(stock.c.sku == count.sku))
        await set_stock(conn, count.sku, count.on_hand)
        return int(before != count.on_hand)

    changed = await _each(ctx, "counts", body.counts, one)
    return await _done(ctx, m.Applied(received=len(body.counts), changed=changed), changed)


async def _restocks(ctx: ApiContext, _: Any, body: m.RestocksIn) -> m.Applied:
    async def one(conn: AsyncConnection, r: m.Restock) -> int:
        return await add_restock(conn, r.restock_id, r.supplier_id, r.sku, r.qty, r.expected_date)

    changed = await _each(ctx, "restocks", body.restocks, one)
    return await _done(ctx, m.Applied(received=len(body.restocks), changed=changed), changed)


async def _restock_date(ctx: ApiContext, path: m.RestockPath, body: m.RestockDateIn) -> Any:
    try:
        async with ctx.store.begin() as conn:
            proj = await change_restock_date(conn, path.restock_id, body.expected_date, body.reason)
    except StoreError as e:
        raise refused(e, "restock_id", in_path=True) from None
    answer = m.RestockDateOut(
        restock_id=path.restock_id,
        changed=proj is not None,
        lines_moved=0 if proj is None else len(proj.moved),
    )
    return await _done(ctx, answer, answer.changed)


async def _receive(ctx: ApiContext, path: m.RestockPath, body: m.ReceiveIn) -> Any:
    try:
        async with ctx.store.begin() as conn:
            rec = await receive_restock(conn, path.restock_id, body.qty)
    except StoreError as e:
        raise refused(e, "restock_id", in_path=True) from None
    answer = m.ReceiptOut(
        restock_id=path.restock_id,
        changed=rec.changed,
        qty=rec.qty,
        # In the receipt's transaction; a big receipt's rest is allocated in batches after it
        # (store.backorders.run_allocation), and to_free_stock is then 0 until they end.
        allocated=sum(a.qty for a in rec.allocated) if rec.changed else 0,
        to_free_stock=rec.to_free_stock,
    )
    return await _done(ctx, answer, rec.changed)


async def _cancel_restock(ctx: ApiContext, path: m.RestockPath, body: m.CancelIn) -> Any:
    try:
        async with ctx.store.begin() as conn:
            proj = await cancel_restock(conn, path.restock_id, body.reason)
    except StoreError as e:
        raise refused(e, "restock_id", in_path=True) from None
    answer = m.RestockCancelOut(restock_id=path.restock_id, changed=proj is not None)
    return await _done(ctx, answer, answer.changed)


async def _customers(ctx: ApiContext, _: Any, body: m.CustomersIn) -> m.Applied:
    async def one(conn: AsyncConnection, c: m.Customer) -> int:
        return await upsert_customer(
            conn, CustomerIn(c.customer_id, c.name, c.email, c.phone, c.postcode, c.language)
        )

    changed = await _each(ctx, "customers", body.customers, one)
    return m.Applied(received=len(body.customers), changed=changed)


async def _orders(ctx: ApiContext, _: Any, body: m.OrdersIn) -> m.Applied:
    new = [
        OrderIn(
            o.order_number,
            o.customer_id,
            tuple(NewLine(ln.sku, ln.qty, ln.unit_price_minor) for ln in o.lines),
            o.placed_at,
            o.priority,
        )
        for o in body.orders
    ]
    where = "orders"
    try:
        async with ctx.store.begin() as conn:
            # As the orders import places a file: all at once when that gives the same store
            # (place_orders says), else one after another.
            created = await place_orders(conn, new)
            if created is None:
                created = 0
                for i, o in enumerate(new):
                    where = f"orders[{i}]"
                    placed = await place_order(
                        conn,
                        o.order_number,
                        o.customer_id,
                        list(o.lines),
                        placed_at=o.placed_at,
                        priority=o.priority,
                    )
                    created += placed.created
    except StoreError as e:
        raise refused(e, where) from None
    return await _done(ctx, m.Applied(received=len(new), changed=created), created)


async def _cancel_order(ctx: ApiContext, path: m.OrderPath, body: m.CancelIn) -> Any:
    try:
        async with ctx.store.begin() as conn:
            c = await cancel_order(conn, path.order_number, reason=body.reason)
    except StoreError as e:
        raise refused(e, "order_number", in_path=True) from None
    answer = m.CancellationOut(
        order_number=path.order_number, changed=c.changed, cancelled_qty=c.cancelled_qty
    )
    return await _done(ctx, answer, c.changed)


async def _cancel_line(ctx: ApiContext, path: m.OrderLinePath, body: m.CancelIn) -> Any:
    try:
        async with ctx.store.begin() as conn:
            c = await cancel_line(conn, path.order_number, path.line_no, reason=body.reason)
    except StoreError as e:
        raise refused(e, "order_number", in_path=True) from None
    answer = m.CancellationOut(
        order_number=path.order_number, changed=c.changed, cancelled_qty=c.cancelled_qty
    )
    return await _done(ctx, answer, c.changed)


async def _ship(ctx: ApiContext, path: m.OrderPath, body: m.ShipmentIn) -> Any:
    shipped_on = body.shipped_on or ctx.now().astimezone(ctx.settings.zone).date()
    try:
        async with ctx.store.begin() as conn:
            s = await ship(
                conn,
                body.shipment_id,
                path.order_number,
                carrier=body.carrier,
                tracking_number=body.tracking_number,
                shipped_on=shipped_on,
                lines={ln.line_no: ln.qty for ln in body.lines} if body.lines else None,
            )
    except StoreError as e:
        raise refused(e, "order_number", in_path=True) from None
    answer = m.ShipmentOut(
        shipment_id=body.shipment_id, changed=s.changed, units=sum(a.qty for a in s.lines)
    )
    return await _done(ctx, answer, s.changed)


async def _link(ctx: ApiContext, _: Any, body: m.LinkIn) -> m.LinkOut:
    """The signed code of ``backorder-admin link``, for the shop's order e-mails."""
    async with ctx.store.connect() as conn:
        if body.order_number is not None:
            row = (
                await conn.execute(
                    select(orders.c.order_id, orders.c.customer_id).where(
                        orders.c.order_number == body.order_number
                    )
                )
            ).first()
            if row is None:
                raise Refused(422, [("order_number", f"no order {body.order_number}")])
            order_id, customer_id = int(row.order_id), int(row.customer_id)
        else:
            assert body.customer_id is not None
            order_id, customer_id = None, body.customer_id
            found = await conn.scalar(
                select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
            )
            if found is None:
                raise Refused(422, [("customer_id", f"no customer {customer_id}")])
    days = body.days or ctx.settings.link_code_days
    expires_at = (ctx.now() + timedelta(days=days)).replace(microsecond=0)
    code = make_link_code(
        ctx.settings.link_secret.get_secret_value(),
        customer_id,
        expires_at=expires_at,
        order_id=order_id,
    )
    username = ctx.bot_username().lstrip("@")
    return m.LinkOut(url=f"https://t.me/{username}?start={code}", code=code, expires_at=expires_at)


async def _each(
    ctx: ApiContext,
    name: str,
    items: Sequence[T],
    apply: Callable[[AsyncConnection, T], Awaitable[int | bool]],
) -> int:
    """A batch: ``apply`` to every item in one transaction, the number it changed; a refused
    item is answered at its place (``name[i]``) and nothing of the batch is written."""
    changed = 0
    where = name
    try:
        async with ctx.store.begin() as conn:
            for i, item in enumerate(items):
                where = f"{name}[{i}]"
                changed += await apply(conn, item)
    except StoreError as e:
        raise refused(e, where) from None
    return changed


async def _done(ctx: ApiContext, answer: Any, changed: bool | int) -> Any:
    """After the change's commit: what it owes (allocation and projection are in its own
    transaction; the delay policy and the notices here), as the admin commands run it."""
    if changed:
        await ctx.follow_on.settle()
    return answer


_PATH_ERRORS = (404, 409)

ENDPOINTS: list[tuple[Endpoint, Any]] = [
    (
        Endpoint(
            "POST",
            "/api/products",
            "Add or update products and their alternatives",
            m.ProductsIn,
            m.Applied,
            errors=(409,),
            tags=("catalog",),
        ),
        _products,
    ),
    (
        Endpoint(
            "POST",
            "/api/suppliers",
            "Add or update suppliers",
            m.SuppliersIn,
            m.Applied,
            tags=("catalog",),
        ),
        _suppliers,
    ),
    (
        Endpoint(
            "POST",
            "/api/stock",
            "Stock counts: set the units on hand",
            m.StockIn,
            m.Applied,
            errors=(409,),
            tags=("stock",),
        ),
        _stock,
    ),
    (
        Endpoint(
            "POST",
            "/api/restocks",
            "Record purchase orders (restocks)",
            m.RestocksIn,
            m.Applied,
            errors=(409,),
            tags=("restocks",),
        ),
        _restocks,
    ),
    (
        Endpoint(
            "POST",
            "/api/restocks/{restock_id}/date",
            "Move a restock's expected date",
            m.RestockDateIn,
            m.RestockDateOut,
            m.RestockPath,
            _PATH_ERRORS,
            ("restocks",),
        ),
        _restock_date,
    ),
    (
        Endpoint(
            "POST",
            "/api/restocks/{restock_id}/receive",
            "Book a restock as received",
            m.ReceiveIn,
            m.ReceiptOut,
            m.RestockPath,
            _PATH_ERRORS,
            ("restocks",),
        ),
        _receive,
    ),
    (
        Endpoint(
            "POST",
            "/api/restocks/{restock_id}/cancel",
            "Cancel a restock",
            m.CancelIn,
            m.RestockCancelOut,
            m.RestockPath,
            _PATH_ERRORS,
            ("restocks",),
        ),
        _cancel_restock,
    ),
    (
        Endpoint(
            "POST",
            "/api/customers",
            "Add or update customers",
            m.CustomersIn,
            m.Applied,
            tags=("customers",),
        ),
        _customers,
    ),
    (
        Endpoint(
            "POST",
            "/api/orders",
            "Place orders",
            m.OrdersIn,
            m.Applied,
            errors=(409,),
            tags=("orders",),
        ),
        _orders,
    ),
    (
        Endpoint(
            "POST",
            "/api/orders/{order_number}/cancel",
            "Cancel what is not shipped of an order",
            m.CancelIn,
            m.CancellationOut,
            m.OrderPath,
            _PATH_ERRORS,
            ("orders",),
        ),
        _cancel_order,
    ),
    (
        Endpoint(
            "POST",
            "/api/orders/{order_number}/lines/{line_no}/cancel",
            "Cancel what is not shipped of an order line",
            m.CancelIn,
            m.CancellationOut,
            m.OrderLinePath,
            _PATH_ERRORS,
            ("orders",),
        ),
        _cancel_line,
    ),
    (
        Endpoint(
            "POST",
            "/api/orders/{order_number}/shipments",
            "Ship allocated units",
            m.ShipmentIn,
            m.ShipmentOut,
            m.OrderPath,
            _PATH_ERRORS,
            ("orders",),
        ),
        _ship,
    ),
    (
        Endpoint(
            "POST",
            "/api/links",
            "A deep link that links a customer's chat (and opens an order)",
            m.LinkIn,
            m.LinkOut,
            tags=("links",),
        ),
        _link,
    ),
]


def shop_routes(app: web.Application) -> None:
    for endpoint, apply in ENDPOINTS:
        add_endpoint(app, endpoint, apply)

"""Master data: products, alternatives, suppliers, customers, restock orders.

Products, suppliers and customers are updated in place when their id comes again (the shop's
catalog is the source); a restock id that comes again must carry the same content, because
its date only moves through ``change_restock_date`` with a reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import _ensure_stock_row, _project_now, request_projection
from store.errors import Conflict, NotFound, StoreError
from store.events import log_event
from store.schema import (
    customers,
    product_alternatives,
    products,
    restocks,
    suppliers,
    utcnow,
)

LANGUAGES = ("en", "de", "es", "ru")


@dataclass(frozen=True)
class ProductIn:
    sku: str
    name_en: str
    category: str
    price_minor: int
    currency: str
    active: bool = True
    backorderable: bool = True
    name_de: str | None = None
    name_es: str | None = None
    name_ru: str | None = None


@dataclass(frozen=True)
class CustomerIn:
    customer_id: int
    name: str
    email: str
    phone: str | None = None
    postcode: str | None = None
    language: str = "en"
    notify_delays: bool = True
    notify_back_in_stock: bool = True


async def upsert_product(conn: AsyncConnection, p: ProductIn) -> bool:
    """Insert or update; True if anything changed."""
    if p.price_minor < 0:
        raise StoreError(f"{p.sku}: negative price")
    values = asdict(p)
    current = (
        await conn.execute(select(*[products.c[k] for k in values]).where(products.c.sku == p.sku))
    ).first()
    now = utcnow()
    if current is None:
        await conn.execute(insert(products).values(**values, created_at=now, updated_at=now))
        await _ensure_stock_row(conn, p.sku)
        await log_event(conn, "product_added", sku=p.sku)
        return True
    if dict(current._mapping) == values:
        return False
    await conn.execute(
        update(products).where(products.c.sku == p.sku).values(**values, updated_at=now)
    )
    await log_event(conn, "product_changed", sku=p.sku)
    return True


async def set_alternatives(conn: AsyncConnection, sku: str, alternatives: list[str]) -> bool:
    have = [
        r.alt_sku
        for r in await conn.execute(
            select(product_alternatives.c.alt_sku)
            .where(product_alternatives.c.sku == sku)
            .order_by(product_alternatives.c.rank)
        )
    ]
    if have == alternatives:
        return False
    for alt in alternatives:
        if alt == sku:
            raise StoreError(f"{sku} cannot be its own alternative")
        if await conn.scalar(select(products.c.sku).where(products.c.sku == alt)) is None:
            raise NotFound(f"unknown SKU {alt}")
    await conn.execute(delete(product_alternatives).where(product_alternatives.c.sku == sku))
    if alternatives:
        await conn.execute(
            insert(product_alternatives),
            [{"sku": sku, "alt_sku": a, "rank": i} for i, a in enumerate(alternatives)],
        )
    await conn.execute(update(products).where(products.c.sku == sku).values(updated_at=utcnow()))
    return True


async def upsert_supplier(
    conn: AsyncConnection,
    supplier_id: str,
    name: str,
    email: str | None = None,
    lead_days: int | None = None,
) -> bool:
    current = (
        await conn.execute(
            select(suppliers.c.name, suppliers.c.email, suppliers.c.lead_days).where(
                suppliers.c.supplier_id == supplier_id
            )
        )
    ).first()
    if current is None:
        await conn.execute(
            insert(suppliers).values(
                supplier_id=supplier_id,
                name=name,
                email=email,
                lead_days=lead_days,
                created_at=utcnow(),
            )
        )
        return True
    if tuple(current) == (name, email, lead_days):
        return False
    await conn.execute(
        update(suppliers)
        .where(suppliers.c.supplier_id == supplier_id)
        .values(name=name, email=email, lead_days=lead_days)
    )
    return True


async def upsert_customer(conn: AsyncConnection, c: CustomerIn) -> bool:
    values = asdict(c)
    if c.language not in LANGUAGES:
        raise StoreError(f"customer {c.customer_id}: unknown language {c.language!r}")
    current = (
        await conn.execute(
            select(*[customers.c[k] for k in values]).where(
                customers.c.customer_id == c.customer_id
            )
        )
    ).first()
    if current is None:
        await conn.execute(insert(customers).values(**values, created_at=utcnow()))
        return True
    if dict(current._mapping) == values:
        return False
    await conn.execute(
        update(customers).where(customers.c.customer_id == c.customer_id).values(**values)
    )
    return True


async def add_restock(
    conn: AsyncConnection,
    restock_id: str,
    supplier_id: str,
    sku: str,
    qty: int,
    expected_date: date,
) -> bool:
    """Record a purchase order. True if new; False if it exists with the same content."""
    if qty <= 0:
        raise StoreError(f"restock {restock_id}: quantity must be positive")
    current = (
        await conn.execute(
            select(
                restocks.c.supplier_id, restocks.c.sku, restocks.c.qty, restocks.c.expected_date
            ).where(restocks.c.restock_id == restock_id)
        )
    ).first()
    if current is not None:
        if tuple(current) == (supplier_id, sku, qty, expected_date):
            return False
        raise Conflict(f"restock {restock_id} exists with different content")
    if (
        await conn.scalar(
            select(suppliers.c.supplier_id).where(suppliers.c.supplier_id == supplier_id)
        )
        is None
    ):
        raise NotFound(f"unknown supplier {supplier_id}")
    if await conn.scalar(select(products.c.sku).where(products.c.sku == sku)) is None:
        raise NotFound(f"unknown SKU {sku}")
    # The projection row is every change's first lock (store.backorders.hold_projection).
    await request_projection(conn, [sku])
    now = utcnow()
    await conn.execute(
        insert(restocks).values(
            restock_id=restock_id,
            supplier_id=supplier_id,
            sku=sku,
            qty=qty,
            expected_date=expected_date,
            status="open",
            qty_received=0,
            created_at=now,
            updated_at=now,
        )
    )
    await log_event(
        conn, "restock_added", sku=sku, restock_id=restock_id, qty=qty, expected=expected_date
    )
    await _project_now(conn, sku)
    return True

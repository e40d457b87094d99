from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from store.master import (
    CustomerIn,
    ProductIn,
    add_restock,
    upsert_customer,
    upsert_product,
    upsert_supplier,
)

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
D1 = date(2026, 2, 1)
D2 = date(2026, 3, 1)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def seed_catalog(conn: AsyncConnection, customers: int = 5) -> None:
    await upsert_product(
        conn,
        ProductIn(
            "KET-0001",
            "Steel Kettle",
            "kettles",
            2999,
            "EUR",
            name_de="Wasserkocher Stahl",
            name_es="Hervidor de acero",
            name_ru="Чайник стальной",
        ),
    )
    await upsert_product(conn, ProductIn("KET-0002", "Glass Kettle", "kettles", 3499, "EUR"))
    await upsert_product(
        conn, ProductIn("BIK-0001", "City Bike", "bikes", 49900, "EUR", backorderable=False)
    )
    await upsert_product(
        conn, ProductIn("SOF-0001", "Old Sofa", "sofas", 99900, "EUR", active=False)
    )
    await upsert_supplier(conn, "SUP-1", "Acme")
    for i in range(1, customers + 1):
        await upsert_customer(
            conn, CustomerIn(i, f"Customer {i}", f"c{i}@example.com", postcode=f"1011{i}")
        )


async def restock(
    conn: AsyncConnection, rid: str, qty: int, when: date, sku: str = "KET-0001"
) -> None:
    await add_restock(conn, rid, "SUP-1", sku, qty, when)

"""A list of ids bound as one parameter (store.marks.in_ids, in_list): JSON for json_each on
SQLite, an integer array on PostgreSQL. Exactly the rows whose id is listed, for an empty list,
duplicates and a list longer than any statement's limit of parameters."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from store import Store
from store.marks import id_list, in_ids, in_list
from store.schema import customers, utcnow


async def _customers(store: Store, count: int) -> None:
    async with store.begin() as conn:
        await conn.execute(
            insert(customers),
            [
                {"customer_id": i, "name": f"C{i}", "email": f"c{i}@x.test", "created_at": utcnow()}
                for i in range(1, count + 1)
            ],
        )


async def test_the_rows_listed_and_no_other(store: Store) -> None:
    await _customers(store, 40)
    c = customers.c
    async with store.connect() as conn:

        async def listed(ids: list[int]) -> list[int]:
            rows = await conn.scalars(
                select(c.customer_id)
                .where(in_ids(conn, c.customer_id, ids))
                .order_by(c.customer_id)
            )
            return list(rows)

        assert await listed([3, 1, 40, 77]) == [1, 3, 40]
        assert await listed([5, 5, 5]) == [5]
        assert await listed([]) == []


async def test_a_list_longer_than_a_statements_parameters(store: Store) -> None:
    # 70,000 ids: past SQLite's 32,766 and PostgreSQL's 65,535 parameters per statement.
    await _customers(store, 300)
    c = customers.c
    wanted = list(range(2, 70_002, 2))
    async with store.begin() as conn:
        done = await conn.execute(
            update(customers).where(in_ids(conn, c.customer_id, wanted)).values(language="de")
        )
        assert done.rowcount == 150
        german = await conn.scalars(
            select(c.customer_id).where(c.language == "de").order_by(c.customer_id)
        )
        assert list(german) == list(range(2, 301, 2))


async def test_a_statement_built_once_takes_each_execution_s_list(store: Store) -> None:
    await _customers(store, 10)
    c = customers.c
    async with store.connect() as conn:
        statement = (
            select(c.customer_id)
            .where(in_list(conn.dialect.name, c.customer_id, id_list("ids")))
            .order_by(c.customer_id)
        )
        assert list(await conn.scalars(statement, {"ids": [2, 4]})) == [2, 4]
        assert list(await conn.scalars(statement, {"ids": [9]})) == [9]
        assert list(await conn.scalars(statement, {"ids": []})) == []

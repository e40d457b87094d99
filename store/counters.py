"""Numbers the store hands out itself (table ``counters``), each taken by one statement.

Reading the largest number in use and adding one is a check-then-write: two transactions
read the same largest number (PostgreSQL at READ COMMITTED, or two SQLite connections before
either writes) and hand out the same one. The counter row is read and moved by a single
upsert instead: on PostgreSQL the second waits for the first's row lock and counts on from
what it committed; SQLite runs one writer at a time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import counters


async def next_value(conn: AsyncConnection, name: str, *, above: int = 0) -> int:
    """The next number of counter ``name``: one past the last one it gave, and past ``above``
    (numbers in use that the counter did not give: orders imported from the shop). Held by
    the caller's transaction until it ends; rolled back, the number is given again."""
    c = counters.c
    dialect = conn.dialect.name
    upsert: Any
    if dialect == "postgresql":
        upsert = postgresql.insert(counters)
    elif dialect == "sqlite":
        upsert = sqlite.insert(counters)
    else:
        raise NotImplementedError(f"counters on {dialect}")
    stmt = (
        upsert.values(name=name, value=above + 1)
        .on_conflict_do_update(
            index_elements=[c.name],
            set_={"value": case((c.value < above, above), else_=c.value) + 1},
        )
        .returning(c.value)
    )
    return int((await conn.execute(stmt)).scalar_one())

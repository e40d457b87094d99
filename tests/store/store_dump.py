"""The whole store as rows, to show that a refused command wrote nothing at all."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from store import open_store
from store.schema import metadata


def dump(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, time stamps included, in a fixed order."""
    return asyncio.run(_dump(db_url))


async def _dump(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    store = await open_store(db_url)
    try:
        async with store.connect() as conn:
            return {
                table.name: [
                    tuple(row) for row in await conn.execute(select(table).order_by(*table.columns))
                ]
                for table in metadata.sorted_tables
            }
    finally:
        await store.close()

"""The append-only event log."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import events, utcnow

# One statement, its values given at execution: built anew for every event (with the values
# in it), it cost more than the insert (every batch of the follow-on logs one).
_LOG = insert(events)


def _default(value: Any) -> str:
    return str(value)


async def log_event(
    conn: AsyncConnection,
    kind: str,
    *,
    sku: str | None = None,
    order_id: int | None = None,
    line_id: int | None = None,
    restock_id: str | None = None,
    customer_id: int | None = None,
    **data: Any,
) -> None:
    await conn.execute(
        _LOG,
        {
            "at": utcnow(),
            "kind": kind,
            "sku": sku,
            "order_id": order_id,
            "line_id": line_id,
            "restock_id": restock_id,
            "customer_id": customer_id,
            "data": json.dumps(data, default=_default, sort_keys=True) if data else None,
        },
    )


async def log_events(conn: AsyncConnection, kind: str, rows: list[dict[str, Any]]) -> None:
    """``log_event`` for many at once, one moment for all: each row names its sku, order_id,
    line_id, restock_id, customer_id (those it has), the rest is its data."""
    if not rows:
        return
    now = utcnow()
    keys = ("sku", "order_id", "line_id", "restock_id", "customer_id")
    params = []
    for row in rows:
        data = {k: v for k, v in row.items() if k not in keys}
        params.append(
            {
                "at": now,
                "kind": kind,
                **{k: row.get(k) for k in keys},
                "data": json.dumps(data, default=_default, sort_keys=True) if data else None,
            }
        )
    await conn.execute(_LOG, params)

"""The append-only event log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import events, utcnow

# One statement, its values given at execution: built anew for every event (with the values
# in it), it cost more than the insert (every batch of the follow-on logs one).
_LOG = insert(events)


def _default(value: Any) -> str:
    return str(value)


# The columns an event names; everything else it is given is its data.
_NAMED = ("sku", "order_id", "line_id", "restock_id", "customer_id")


def _row(at: datetime, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in fields.items() if k not in _NAMED}
    return {
        "at": at,
        "kind": kind,
        **{k: fields.get(k) for k in _NAMED},
        "data": json.dumps(data, default=_default, sort_keys=True) if data else None,
    }


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
    named = {
        "sku": sku,
        "order_id": order_id,
        "line_id": line_id,
        "restock_id": restock_id,
        "customer_id": customer_id,
    }
    await conn.execute(_LOG, _row(utcnow(), kind, {**named, **data}))


async def log_events(conn: AsyncConnection, kind: str, rows: list[dict[str, Any]]) -> None:
    """``log_event`` for many at once, one moment for all: each row names its sku, order_id,
    line_id, restock_id, customer_id (those it has), the rest is its data."""
    if rows:
        now = utcnow()
        await conn.execute(_LOG, [_row(now, kind, row) for row in rows])

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

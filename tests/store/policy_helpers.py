"""Stores with late lines, and what the delay policy left in them, for the tests of the policy's
batches (test_policy_batches.py, test_policy_concurrent.py, test_policy_machine.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import NewLine, change_restock_date, place_order
from store.chats import link_chat
from store.delays import DelayPolicy
from store.master import CustomerIn, upsert_customer
from store.schema import delay_offers, order_lines, outbox
from tests.pg import Databases, sqlite_url
from tests.store.helpers import restock, seed_catalog

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
D0 = date(2026, 1, 1)
POLICY = DelayPolicy()
SKUS = ("KET-0001", "KET-0002")


async def clone(url: str, request: pytest.FixtureRequest, name: str) -> str:
    """The URL of a copy of the (closed) store at ``url``, dropped after the test: a copy of
    the file on SQLite, on PostgreSQL a database made with the store's as its template."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        path = Path(parsed.database).with_name(f"{name}.sqlite3")
        shutil.copy(parsed.database, path)
        return sqlite_url(path)
    databases: Databases = request.getfixturevalue("pg_databases")
    copy, copy_url = await asyncio.to_thread(databases.fresh, parsed.database)
    request.addfinalizer(lambda: databases.drop(copy))
    return copy_url


async def late_store(conn: AsyncConnection, orders: int, customers: int = 20) -> None:
    """``orders`` one- or two-line orders on restocks due in a month, then both restocks
    slip: one by 10 days (a short, silent delay), one by 45 (consent needed). Every fifth
    order was promised for day 100: the slips move its dates, and it is not late. Every other
    customer has a chat."""
    await seed_catalog(conn, customers=5)
    for cid in range(6, customers + 1):
        await upsert_customer(conn, CustomerIn(cid, f"C{cid}", f"c{cid}@example.com"))
    for cid in range(1, customers + 1, 2):
        await link_chat(conn, 1000 + cid, cid)
    await restock(conn, "R-1", 10 * orders, D0 + timedelta(days=30), SKUS[0])
    await restock(conn, "R-2", 10 * orders, D0 + timedelta(days=30), SKUS[1])
    for i in range(orders):
        lines = [NewLine(SKUS[i % 2], 1 + i % 3)]
        if i % 5 == 0:
            lines.append(NewLine(SKUS[(i + 1) % 2], 1))
        await place_order(
            conn, str(100_001 + i), 1 + i % customers, lines, placed_at=T0 + timedelta(minutes=i)
        )
    ol = order_lines.c
    await conn.execute(
        update(order_lines)
        .where(ol.order_id.in_([o for o in range(1, orders + 1) if o % 5 == 0]))
        .values(promised_date=D0 + timedelta(days=100))
    )
    await change_restock_date(conn, "R-1", D0 + timedelta(days=40), "slip")
    await change_restock_date(conn, "R-2", D0 + timedelta(days=75), "slip")


async def policy_state(conn: AsyncConnection) -> dict[str, Any]:
    """Offers by (line_id, seq), notices with their offers named the same way, and each line's
    dates and told marks: what two stores must share to have had the same policy."""
    d = delay_offers.c
    offers = (
        await conn.execute(
            select(
                d.offer_id,
                d.line_id,
                d.seq,
                d.order_id,
                d.customer_id,
                d.promised_date,
                d.revised_date,
                d.consent_needed,
                d.answer_by,
                d.status,
                d.answer,
                d.answer_channel,
            ).order_by(d.line_id, d.seq)
        )
    ).all()
    key = {int(r.offer_id): (int(r.line_id), int(r.seq)) for r in offers}
    o = outbox.c
    notices = []
    for r in await conn.execute(
        select(o.dedupe_key, o.chat_id, o.customer_id, o.kind, o.payload, o.status)
    ):
        payload = json.loads(r.payload)
        dedupe = r.dedupe_key
        if "offer_id" in payload:
            named = key[int(payload.pop("offer_id"))]
            payload["offer"] = list(named)
            dedupe = f"{dedupe.split(':')[0]}:{named[0]}/{named[1]}"
        notices.append(
            (
                dedupe,
                r.chat_id,
                r.customer_id,
                r.kind,
                json.dumps(payload, sort_keys=True),
                r.status,
            )
        )
    ol = order_lines.c
    lines = (
        await conn.execute(
            select(
                ol.line_id,
                ol.qty_waiting,
                ol.qty_cancelled,
                ol.projected_date,
                ol.promised_date,
                ol.last_told_date,
                ol.told_cancelled_qty,
                ol.told_ready_qty,
                ol.delay_consent,
            ).order_by(ol.line_id)
        )
    ).all()
    return {
        "offers": [tuple(r)[1:] for r in offers],
        "notices": sorted(notices),
        "lines": [tuple(r) for r in lines],
    }

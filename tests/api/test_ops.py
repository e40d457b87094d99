"""/healthz, /readyz and /metrics (shopapi/ops.py) on a real store of each backend: the probes'
answers, and the store's gauges against rows of known times."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from alembic.script import ScriptDirectory
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, insert
from sqlalchemy.ext.asyncio import create_async_engine

from bot import metrics
from shopapi.ops import add_ops_routes, metrics_middleware
from store import Store
from store.db import alembic_config
from store.schema import chats, handoff_escalations, handoffs, outbox
from tests.api.shopify_helpers import db_url, empty_sqlite_template  # noqa: F401

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class BotApi:
    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> bool:
        return self.up


async def serve(store: Store, bot_api: Callable[[], Awaitable[bool]]) -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[metrics_middleware])
    add_ops_routes(app, store=store, check_bot_api=bot_api, now=lambda: NOW)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
def bot_api() -> BotApi:
    return BotApi()


@pytest.fixture
async def client(store: Store, bot_api: BotApi) -> AsyncIterator[TestClient]:
    async for c in serve(store, bot_api):
        yield c


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_healthz_and_readyz_when_all_is_well(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})
    response = await client.get("/readyz")
    assert (response.status, await response.json()) == (
        200,
        {"status": "ready", "checks": {"store": "ok", "bot_api": "ok"}},
    )


async def test_readyz_names_the_check_that_failed(
    client: TestClient,
    bot_api: BotApi,
    store: Store,
    db_url: str,  # noqa: F811
) -> None:
    bot_api.up = False
    response = await client.get("/readyz")
    assert (response.status, await response.json()) == (
        503,
        {"status": "not ready", "checks": {"store": "ok", "bot_api": "bot api: not reachable"}},
    )
    bot_api.up = True

    # The schema one migration behind the newest (a process started before an upgrade).
    def one_down(sync_conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "-1")

    async with store.engine.begin() as conn:
        await conn.run_sync(one_down)
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert body["checks"]["store"].startswith("migrations: at 00")
    assert body["checks"]["store"].endswith(f", newest is {heads[0]}")
    assert body["checks"]["bot_api"] == "ok"


async def test_readyz_when_the_store_cannot_be_reached(bot_api: BotApi, tmp_path: Path) -> None:
    # A SQLite path in a directory that does not exist: every connection fails.
    url = f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.sqlite3"
    broken = Store(create_async_engine(url), url)
    threads = set(threading.enumerate())
    try:
        async for client in serve(broken, bot_api):
            response = await client.get("/readyz")
            body = await response.json()
            assert response.status == 503
            assert body["checks"] == {"store": "store: OperationalError", "bot_api": "ok"}
            # /metrics still answers with the counters when the gauges cannot be read.
            assert (await client.get("/metrics")).status == 200
    finally:
        await broken.close()
        # Each failed connection's aiosqlite thread answers its last call on this test's
        # event loop: once the loop is closed that is an error in the thread, which pytest
        # reports at the next test (a CI run's error at setup of the metrics test).
        for _ in range(200):
            new = set(threading.enumerate()) - threads
            if not [t for t in new if "_connection_worker_thread" in t.name and t.is_alive()]:
                break
            await asyncio.sleep(0.05)


async def test_metrics_reads_the_store_gauges_and_counts_api_requests(
    client: TestClient, store: Store
) -> None:
    async with store.begin() as conn:
        for chat in (1, 2, 3):
            await conn.execute(insert(chats).values(chat_id=chat, created_at=NOW, updated_at=NOW))
        rows = [
            # Due 90 s ago and 30 s ago; one due in the future; one sent long ago.
            ("a", "pending", NOW - timedelta(seconds=90)),
            ("b", "pending", NOW - timedelta(seconds=30)),
            ("c", "pending", NOW + timedelta(hours=1)),
            ("d", "sent", NOW - timedelta(days=3)),
        ]
        for key, status, not_before in rows:
            await conn.execute(
                insert(outbox).values(
                    dedupe_key=key,
                    chat_id=1,
                    kind="order_update",
                    payload="{}",
                    status=status,
                    not_before=not_before,
                    created_at=NOW - timedelta(days=3),
                )
            )
        # Waiting, unanswered since its escalation 10 minutes ago; answered; closed.
        for hid, chat, state, answered, started in (
            (1, 1, "waiting", None, NOW - timedelta(minutes=10)),
            (2, 2, "answered", NOW - timedelta(minutes=1), NOW - timedelta(hours=2)),
            (3, 3, "closed", None, NOW - timedelta(days=1)),
        ):
            await conn.execute(
                insert(handoffs).values(
                    handoff_id=hid,
                    chat_id=chat,
                    support_chat_id=-100,
                    state=state,
                    reason="asked",
                    customer_name="C",
                    opened_at=started,
                    last_activity_at=started,
                    answered_at=answered,
                    created_at=started,
                    updated_at=started,
                )
            )
            await conn.execute(
                insert(handoff_escalations).values(
                    handoff_id=hid,
                    reason="asked",
                    started_at=started,
                    ended_at=NOW if state == "closed" else None,
                )
            )
    before = metrics.value(
        "backorder_api_requests_total", endpoint="/metrics", method="GET", status="200"
    )
    unmatched = metrics.value(
        "backorder_api_requests_total", endpoint="unmatched", method="GET", status="404"
    )
    assert (await client.get("/nowhere")).status == 404
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    got = samples(await response.text())
    assert got[("backorder_outbox_backlog", ())] == 3
    assert got[("backorder_outbox_oldest_due_seconds", ())] == 90
    assert got[("backorder_handoffs_open", ())] == 2
    assert got[("backorder_handoff_oldest_unanswered_seconds", ())] == 600
    # The scrape itself is counted once it has answered, so it shows in the next one.
    assert (
        metrics.value(
            "backorder_api_requests_total", endpoint="/metrics", method="GET", status="200"
        )
        == before + 1
    )
    assert (
        metrics.value(
            "backorder_api_requests_total", endpoint="unmatched", method="GET", status="404"
        )
        == unmatched + 1
    )

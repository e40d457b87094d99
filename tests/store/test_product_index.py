"""Store.product_index: rebuilt when the catalog changes, asked no more often than needed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from store import Store, open_store
from store import db as store_db
from store.schema import products

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _add(s: Store, sku: str, name: str) -> None:
    async with s.begin() as conn:
        await conn.execute(
            products.insert().values(
                sku=sku,
                name_en=name,
                category="kettles",
                price_minor=100,
                currency="EUR",
                active=True,
                backorderable=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )


def _skus(index: object, words: str) -> list[str]:
    return [m.sku for m in index.search(words, limit=3)]  # type: ignore[attr-defined]


async def test_the_index_sees_its_own_writes_at_once_and_others_within_the_interval(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "INDEX_CHECK_SECONDS", 1.0)
    other = await open_store(db_url)  # as an admin import in another process would
    await _add(store, "KET-0001", "Kettle")
    assert _skus(await store.product_index(), "kettle") == ["KET-0001"]
    # A write of this process: asked again at once.
    await _add(store, "TEA-0001", "Teapot")
    assert _skus(await store.product_index(), "teapot") == ["TEA-0001"]

    try:
        await _add(other, "MUG-0001", "Mug")
    finally:
        await other.close()
    if store.engine.dialect.name == "postgresql":
        # A trigger moves the catalog's version (several bot processes, #15): seen at once.
        assert _skus(await store.product_index(), "mug") == ["MUG-0001"]
        return
    assert _skus(await store.product_index(), "mug") == []  # not asked again yet
    await asyncio.sleep(1.05)
    assert _skus(await store.product_index(), "mug") == ["MUG-0001"]


async def test_asked_for_the_current_catalog_the_index_sees_another_process_write_at_once(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the bot says "no such product" it asks for the current catalog: another
    process's new product is found at once, neither after the check interval (SQLite) nor
    after its notification is heard (PostgreSQL, a listener that heard nothing yet)."""
    monkeypatch.setattr(store_db, "INDEX_CHECK_SECONDS", 3600.0)
    await _add(store, "KET-0001", "Kettle")
    store.catalog_listening = True  # as while bot.shared listens: the version row not read
    assert _skus(await store.product_index(), "kettle") == ["KET-0001"]
    other = await open_store(db_url)
    try:
        await _add(other, "MUG-0001", "Mug")
    finally:
        await other.close()
    assert _skus(await store.product_index(), "mug") == []  # nothing heard, not due
    assert _skus(await store.product_index(current=True), "mug") == ["MUG-0001"]
    assert _skus(await store.product_index(), "mug") == ["MUG-0001"]

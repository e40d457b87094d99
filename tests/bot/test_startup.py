"""What run_bot.py adds to the application for a whole process (never in other tests)."""

from __future__ import annotations

import gc

from bot.app import build_application, freeze_after_start
from bot.settings import Settings
from store import Store
from tests.conftest import Clock


async def test_the_heap_is_frozen_after_start_with_the_product_index_in_it(
    settings: Settings, store: Store, clock: Clock
) -> None:
    app = build_application(settings, store, now=clock)
    freeze_after_start(app)
    await app.initialize()
    try:
        assert app.post_init is not None
        await app.post_init(app)
        # Built during start-up, then set aside: the collector no longer tracks it.
        index = await store.product_index()
        assert gc.get_freeze_count() > 0
        assert not any(o is index for o in gc.get_objects())
    finally:
        gc.unfreeze()
        await app.shutdown()
        assert app.post_shutdown is not None
        await app.post_shutdown(app)

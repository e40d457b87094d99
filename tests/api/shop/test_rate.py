"""Each token's request rate (API_RATE_PER_SECOND), on the test's own monotonic clock."""

from __future__ import annotations

from typing import Any

import pytest

from store import Store
from tests.api.shop.conftest import ERP_TOKEN, POS_TOKEN, Ticks


@pytest.fixture
def api_environ() -> dict[str, str]:
    return {"API_RATE_PER_SECOND": "2"}


async def test_each_token_has_its_rate_and_429_says_when_to_come_back(
    api: Any, store: Store, ticks: Ticks
) -> None:
    async def status(token: str) -> tuple[int, str | None]:
        r = await api.post(
            "/api/links", json={"customer_id": 1}, headers={"Authorization": f"Bearer {token}"}
        )
        return r.status, r.headers.get("Retry-After")

    # A burst of a second's worth (2), then 429 until the bucket has a request again.
    assert [await status(ERP_TOKEN) for _ in range(3)] == [(200, None), (200, None), (429, "1")]
    # The other integration has its own.
    assert await status(POS_TOKEN) == (200, None)
    ticks.now += 0.5
    assert await status(ERP_TOKEN) == (200, None)
    assert await status(ERP_TOKEN) == (429, "1")

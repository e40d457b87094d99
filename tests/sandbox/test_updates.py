"""getUpdates long polling, offsets and allowed_updates; webhook delivery."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sandbox.client import SandboxClient
from tests.sandbox.conftest import Api


async def test_long_poll_waits_for_an_update(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A")
    started = time.monotonic()
    assert await api.ok("getUpdates", timeout=1) == []
    assert time.monotonic() - started >= 0.9
    poll = asyncio.create_task(api.ok("getUpdates", timeout=10))
    await asyncio.sleep(0.1)
    await client.send_message(1, "hi")
    updates = await asyncio.wait_for(poll, 2)
    assert [u["message"]["text"] for u in updates] == ["hi"]


async def test_offsets_limit_and_negative_offset(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A")
    for i in range(5):
        await client.send_message(1, f"m{i}")
    first = await api.ok("getUpdates", limit=2)
    assert [u["message"]["text"] for u in first] == ["m0", "m1"]
    # Unconfirmed updates come again.
    assert await api.ok("getUpdates", limit=2) == first
    rest = await api.ok("getUpdates", offset=first[-1]["update_id"] + 1)
    assert [u["message"]["text"] for u in rest] == ["m2", "m3", "m4"]
    last = await api.ok("getUpdates", offset=-1)
    assert [u["message"]["text"] for u in last] == ["m4"]
    assert await api.ok("getUpdates", offset=last[0]["update_id"] + 1) == []


async def test_allowed_updates_filters_new_updates(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A")
    assert await api.ok("getUpdates", allowed_updates=["callback_query"]) == []
    sent = await api.ok(
        "sendMessage",
        chat_id=1,
        text="q",
        reply_markup={"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]},
    )
    await client.send_message(1, "ignored")
    await client.press_button(1, sent["message_id"], "a")
    updates = await api.ok("getUpdates")
    assert [list(u)[1] for u in updates] == ["callback_query"]


async def test_second_poller_conflicts_the_first(api: Api) -> None:
    first = asyncio.create_task(api("getUpdates", timeout=5))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(api("getUpdates", timeout=0))
    resp = await asyncio.wait_for(first, 2)
    assert resp.status_code == 409
    assert resp.json()["description"] == (
        "Conflict: terminated by other getUpdates request; "
        "make sure that only one bot instance is running"
    )
    assert (await second).status_code == 200


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[tuple[str | None, dict]], list[int]]]:
    received: list[tuple[str | None, dict]] = []
    statuses: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received, statuses
    finally:
        await runner.cleanup()


async def test_webhook_delivery_with_secret_and_retry(
    api: Api, client: SandboxClient, hook: tuple
) -> None:
    url, received, statuses = hook
    await client.create_user(1, first_name="A")
    statuses.append(500)  # the first delivery fails and is retried
    assert await api.ok("setWebhook", url=url, secret_token="s3cret") is True
    info = await api.ok("getWebhookInfo")
    assert info["url"] == url and info["pending_update_count"] == 0
    body = await api.err("getUpdates")
    assert body["error_code"] == 409 and "webhook is active" in body["description"]
    await client.send_message(1, "one")
    await client.send_message(1, "two")
    for _ in range(100):
        if len(received) >= 3:
            break
        await asyncio.sleep(0.02)
    assert [r[1]["message"]["text"] for r in received] == ["one", "one", "two"]
    assert {r[0] for r in received} == {"s3cret"}
    info = await api.ok("getWebhookInfo")
    assert info["pending_update_count"] == 0
    assert (
        info["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    )
    assert await api.ok("deleteWebhook") is True
    await client.send_message(1, "three")
    updates = await api.ok("getUpdates")
    assert [u["message"]["text"] for u in updates] == ["three"]


async def test_set_webhook_drop_pending(api: Api, client: SandboxClient, hook: tuple) -> None:
    url, received, _ = hook
    await client.create_user(1, first_name="A")
    await client.send_message(1, "old")
    await api.ok("setWebhook", url=url, drop_pending_updates=True)
    await api.ok("deleteWebhook")
    assert await api.ok("getUpdates") == []
    assert received == []

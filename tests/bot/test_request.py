"""bot/request.py: the aiohttp request layer, over real HTTP against the sandbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from telegram import Bot, InputFile
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

import bot.app  # noqa: F401  (sets PTB_TIMEDELTA, as the bot runs)
from bot.inbox import InboxRequest
from bot.request import AiohttpRequest
from sandbox import Sandbox
from sandbox.client import SandboxClient
from tests.conftest import LINK_SECRET

USER = 4242


@pytest.fixture
async def ptb(sandbox: Sandbox, tg: SandboxClient) -> AsyncIterator[Bot]:
    await tg.create_user(USER, first_name="Ada")
    request = AiohttpRequest(connection_pool_size=8, read_timeout=5, connect_timeout=5)
    async with Bot(sandbox.token, base_url=sandbox.api_base, request=request) as bot:
        yield bot


async def test_a_call_succeeds_and_its_answer_is_parsed(ptb: Bot, tg: SandboxClient) -> None:
    assert ptb.username  # getMe ran through the layer on initialize
    sent = await ptb.send_message(USER, "hello <b>there</b>", parse_mode="HTML")
    assert sent.chat.id == USER and sent.text == "hello there"
    [call] = await tg.calls("sendMessage")
    assert call["status"] == 200


async def test_400_and_403_become_ptbs_exceptions(ptb: Bot, tg: SandboxClient) -> None:
    with pytest.raises(BadRequest, match=r"[Cc]hat not found"):
        await ptb.send_message(999_999_999, "nobody")
    await tg.block(USER)
    with pytest.raises(Forbidden):
        await ptb.send_message(USER, "blocked")


async def test_429_becomes_retry_after_with_its_wait(ptb: Bot, tg: SandboxClient) -> None:
    await tg.inject_fault("429", method="sendMessage", retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await ptb.send_message(USER, "too fast")
    assert caught.value.retry_after == timedelta(seconds=7)
    await ptb.send_message(USER, "later")  # one call only


async def test_a_slow_answer_times_out(ptb: Bot, tg: SandboxClient) -> None:
    await tg.inject_fault("slow", method="sendMessage", delay=1.5)
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await ptb.send_message(USER, "slow", read_timeout=0.3)
    assert time.monotonic() - started < 1.2
    await ptb.send_message(USER, "fast again")


async def test_a_dropped_connection_is_a_network_error_not_a_timeout(
    ptb: Bot, tg: SandboxClient
) -> None:
    await tg.inject_fault("drop", method="sendMessage")
    with pytest.raises(NetworkError) as caught:
        await ptb.send_message(USER, "lost")
    assert not isinstance(caught.value, TimedOut)
    assert "aiohttp." in str(caught.value)
    await ptb.send_message(USER, "next one works")


async def test_5xx_is_sent_again_up_to_the_retries_then_given_to_ptb(
    sandbox: Sandbox, tg: SandboxClient
) -> None:
    await tg.create_user(USER, first_name="Ada")
    request = AiohttpRequest(connection_pool_size=2, server_error_retries=2)
    async with Bot(sandbox.token, base_url=sandbox.api_base, request=request) as bot:
        await tg.inject_fault("5xx", method="sendMessage", count=2, status=502)
        sent = await bot.send_message(USER, "third time lucky")
        assert sent.text == "third time lucky"
        assert [c["status"] for c in await tg.calls("sendMessage")] == [502, 502, 200]
        await tg.inject_fault("5xx", method="sendMessage", count=3, status=500)
        with pytest.raises(NetworkError):
            await bot.send_message(USER, "never")
        statuses = [c["status"] for c in await tg.calls("sendMessage")]
        assert statuses == [502, 502, 200, 500, 500, 500]
    [message] = [m for m in await tg.transcript(USER) if m["from_bot"]]
    assert message["text"] == "third time lucky"  # sent once, nothing twice


async def test_a_lost_answer_is_not_sent_again(sandbox: Sandbox, tg: SandboxClient) -> None:
    """Telegram may have sent it: the customer must not read it twice."""
    await tg.create_user(USER, first_name="Ada")
    request = AiohttpRequest(connection_pool_size=2, server_error_retries=2)
    async with Bot(sandbox.token, base_url=sandbox.api_base, request=request) as bot:
        await tg.inject_fault("drop_after", method="sendMessage")
        with pytest.raises(NetworkError):
            await bot.send_message(USER, "once")
    assert [m["text"] for m in await tg.transcript(USER) if m["from_bot"]] == ["once"]


async def test_a_file_is_uploaded_as_multipart(ptb: Bot, tg: SandboxClient) -> None:
    document = InputFile(b"order,qty\n100002,1\n", filename="orders.csv")
    sent = await ptb.send_document(USER, document, caption="your orders")
    assert sent.document is not None
    assert sent.document.file_id.startswith("sandbox-upload-document")
    assert sent.caption == "your orders"


async def test_the_pool_size_bounds_requests_in_flight(sandbox: Sandbox, tg: SandboxClient) -> None:
    await tg.create_user(USER)
    await tg.inject_fault("slow", method="sendMessage", delay=0.4, count=4)
    request = AiohttpRequest(connection_pool_size=2, read_timeout=5, pool_timeout=5)
    async with Bot(sandbox.token, base_url=sandbox.api_base, request=request) as ptb:
        started = time.monotonic()
        await asyncio.gather(*(ptb.send_message(USER, str(i)) for i in range(4)))
        elapsed = time.monotonic() - started
    # Two at a time: two rounds of 0.4 s, where a pool of four would take one.
    assert elapsed >= 0.75


async def test_shutdown_closes_and_initialize_reopens(sandbox: Sandbox) -> None:
    request = AiohttpRequest()
    url = f"{sandbox.api_base}{sandbox.token}/getMe"
    await request.initialize()
    assert (await request.post(url))["is_bot"] is True
    await request.shutdown()
    await request.shutdown()  # twice is fine
    with pytest.raises(NetworkError, match="shut down"):
        await request.post(url)
    await request.initialize()
    assert (await request.post(url))["is_bot"] is True
    await request.shutdown()


async def test_it_works_without_initialize_like_httpx(sandbox: Sandbox) -> None:
    request = AiohttpRequest()
    try:
        assert (await request.post(f"{sandbox.api_base}{sandbox.token}/getMe"))["is_bot"]
    finally:
        await request.shutdown()


async def test_a_refused_connection_is_a_network_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    request = AiohttpRequest(connect_timeout=2)
    try:
        with pytest.raises(NetworkError):
            await request.post(f"http://127.0.0.1:{port}/bot1:x/getMe")
    finally:
        await request.shutdown()


def test_the_app_uses_the_layer_the_setting_names(sandbox: Sandbox, db_url: str) -> None:
    from telegram.request import HTTPXRequest

    from bot.app import build_application
    from bot.settings import load_settings
    from store import Store
    from store.db import create_engine_for

    for layer, kind in (("aiohttp", AiohttpRequest), ("httpx", HTTPXRequest)):
        env = {"BOT_TOKEN": sandbox.token, "DATABASE_URL": db_url, "LINK_SECRET": LINK_SECRET}
        if layer == "httpx":
            env["REQUEST_LAYER"] = "httpx"
        settings = load_settings(env)
        app = build_application(settings, Store(create_engine_for(db_url), db_url))
        updates, replies = app.bot._request  # (get_updates, everything else)
        # getUpdates goes through the inbox, which saves each batch before it is confirmed.
        assert isinstance(updates, InboxRequest) and isinstance(updates.inner, kind)
        assert isinstance(replies, kind)

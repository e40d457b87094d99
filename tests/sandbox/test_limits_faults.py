"""Flood limits answering 429 with retry_after, and injected faults."""

import asyncio
import time

import httpx
import pytest

from sandbox import Sandbox
from sandbox.client import SandboxClient
from tests.sandbox.conftest import Api


@pytest.fixture
async def users(client: SandboxClient) -> list[int]:
    for uid in (1, 2, 3):
        await client.create_user(uid, first_name=f"U{uid}")
    return [1, 2, 3]


async def test_default_limits_are_on() -> None:
    assert Sandbox().limits.enabled


async def test_private_chat_limit(api: Api, client: SandboxClient, users: list[int]) -> None:
    await client.set_limits(enabled=True, private_per_sec=1, private_burst=2)
    await api.ok("sendMessage", chat_id=1, text="a")
    await api.ok("sendMessage", chat_id=1, text="b")
    body = await api.err("sendMessage", chat_id=1, text="c")
    assert body == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    # Another chat has its own budget; the refused message was not sent.
    await api.ok("sendMessage", chat_id=2, text="a")
    assert [r["text"] for r in await client.transcript(1)] == ["a", "b"]
    await asyncio.sleep(1.05)
    await api.ok("sendMessage", chat_id=1, text="c")
    assert await client.count_429() == 1
    assert [c["status"] for c in await client.calls("sendMessage")] == [200, 200, 429, 200, 200]


async def test_group_and_global_limits(api: Api, client: SandboxClient, users: list[int]) -> None:
    group = await client.create_supergroup(members=[1], is_forum=False)
    await client.set_limits(
        enabled=True, group_per_min=3, group_burst=3, global_per_sec=1000, global_burst=1000
    )
    for _ in range(3):
        await api.ok("sendMessage", chat_id=group["id"], text="x")
    body = await api.err("sendMessage", chat_id=group["id"], text="x")
    assert body["error_code"] == 429 and body["parameters"]["retry_after"] == 20
    await client.set_limits(private_burst=100, global_per_sec=2, global_burst=2)
    await api.ok("sendMessage", chat_id=1, text="x")
    await api.ok("sendMessage", chat_id=2, text="x")
    body = await api.err("sendMessage", chat_id=3, text="x")
    assert body["error_code"] == 429
    await client.set_limits(enabled=False)
    for _ in range(20):
        await api.ok("sendMessage", chat_id=3, text="x")


async def test_fault_429_for_n_calls_of_one_method(
    api: Api, client: SandboxClient, users: list[int]
) -> None:
    await client.inject_fault("429", method="sendMessage", count=2, retry_after=7)
    assert await api.ok("getMe")
    for _ in range(2):
        body = await api.err("sendMessage", chat_id=1, text="x")
        assert body["description"] == "Too Many Requests: retry after 7"
        assert body["parameters"] == {"retry_after": 7}
    await api.ok("sendMessage", chat_id=1, text="x")
    assert await client.count_429() == 2


async def test_fault_5xx_for_a_duration(api: Api, client: SandboxClient) -> None:
    await client.inject_fault("5xx", duration=0.3, status=502)
    body = await api.err("getMe")
    assert body == {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    assert (await api.err("getMe"))["error_code"] == 502
    await asyncio.sleep(0.35)
    assert await api.ok("getMe")


async def test_fault_slow_and_clear(api: Api, client: SandboxClient) -> None:
    await client.inject_fault("slow", method="getMe", delay=0.3)
    started = time.monotonic()
    await api.ok("getMe")
    assert time.monotonic() - started >= 0.3
    await client.inject_fault("429", duration=60)
    await client.clear_faults()
    await api.ok("getMe")


async def test_fault_drop_before_and_after(
    api: Api, client: SandboxClient, users: list[int]
) -> None:
    await client.inject_fault("drop", method="sendMessage")
    with pytest.raises(httpx.TransportError):
        await api("sendMessage", chat_id=1, text="lost")
    assert await client.transcript(1) == []
    await client.inject_fault("drop_after", method="sendMessage")
    with pytest.raises(httpx.TransportError):
        await api("sendMessage", chat_id=1, text="sent, answer lost")
    # The message went out even though the bot never heard back.
    assert [r["text"] for r in await client.transcript(1)] == ["sent, answer lost"]


async def test_a_fault_scoped_to_one_chat_spares_the_others(
    api: Api, client: SandboxClient, users: list[int]
) -> None:
    fault = await client.inject_fault("5xx", method="sendMessage", chat_id=2, count=1)
    assert fault["chat_id"] == 2
    await api.ok("sendMessage", chat_id=1, text="spared")
    await api.ok("sendMessage", chat_id="3", text="spared too")
    assert (await api.err("sendMessage", chat_id=2, text="lost"))["error_code"] == 500
    await api.ok("sendMessage", chat_id=2, text="the fault is used up")
    assert [r["text"] for r in await client.transcript(2)] == ["the fault is used up"]
    assert [c["status"] for c in await client.calls("sendMessage")] == [200, 200, 500, 200]


async def test_bad_fault_kind_is_refused(client: SandboxClient) -> None:
    from sandbox.client import SandboxError

    with pytest.raises(SandboxError) as caught:
        await client.inject_fault("meteor")
    assert caught.value.status == 400

"""The "hold" fault: a Bot API call that gets no answer until the test releases it, so a test
can keep a send on its way for exactly as long as it needs (instead of a long "slow" delay
that a loaded machine may outlast)."""

import asyncio

import pytest

from sandbox.client import SandboxClient, SandboxError
from tests.sandbox.conftest import Api


async def wait_held(client: SandboxClient, fault_id: int, calls: int) -> None:
    """Until the fault holds this many calls (they reached the sandbox)."""
    async with asyncio.timeout(60):
        while True:
            if sum(f["held"] for f in await client.faults() if f["id"] == fault_id) == calls:
                return
            await asyncio.sleep(0.01)


async def test_a_held_call_waits_for_its_release_then_runs(api: Api, client: SandboxClient) -> None:
    for uid in (1, 2):
        await client.create_user(uid, first_name=f"U{uid}")
    fault = await client.inject_fault("hold", method="sendMessage", chat_id=1)
    assert fault["held"] == 0
    call = asyncio.create_task(api.ok("sendMessage", chat_id=1, text="held"))
    await wait_held(client, fault["id"], 1)
    # Other chats and methods pass; the held call has not run.
    await api.ok("sendMessage", chat_id=2, text="spared")
    assert not call.done() and await client.transcript(1) == []
    assert [c["params"]["chat_id"] for c in await client.calls("sendMessage")] == ["2"]
    released = await client.release_fault(fault["id"])
    assert released["id"] == fault["id"]
    result = await call
    assert isinstance(result, dict) and result["text"] == "held"
    assert [r["text"] for r in await client.transcript(1)] == ["held"]
    # Used up (count 1) and released: the next call to the chat passes, the fault is gone.
    await api.ok("sendMessage", chat_id=1, text="next")
    assert await client.faults() == []


async def test_clearing_faults_releases_held_calls(api: Api, client: SandboxClient) -> None:
    fault = await client.inject_fault("hold", method="getMe", duration=60)
    calls = [asyncio.create_task(api.ok("getMe")) for _ in range(2)]
    await wait_held(client, fault["id"], 2)
    await client.clear_faults()
    assert all(await asyncio.gather(*calls))
    await api.ok("getMe")


async def test_releasing_an_unknown_fault_is_refused(client: SandboxClient) -> None:
    with pytest.raises(SandboxError) as caught:
        await client.release_fault(99)
    assert caught.value.status == 404

"""Forum topics, the control API and the client helpers."""

import asyncio

import pytest
from telegram import Bot, ForumTopic, Update

from sandbox import Sandbox, Settings
from sandbox.client import SandboxClient, SandboxError
from tests.sandbox.conftest import Api

AGENT = 50


@pytest.fixture
async def group(client: SandboxClient) -> int:
    await client.create_user(1, first_name="Anna")
    await client.create_user(AGENT, first_name="Agent")
    chat = await client.create_supergroup(title="Support", administrators=[AGENT])
    return int(chat["id"])


async def test_forum_topic_lifecycle(api: Api, client: SandboxClient, group: int) -> None:
    bot = Bot("123456:SANDBOX-TOKEN")
    topic = await api.ok("createForumTopic", chat_id=group, name="Anna #100001")
    assert ForumTopic.de_json(topic, bot).name == "Anna #100001"
    tid = topic["message_thread_id"]
    sent = await api.ok("sendMessage", chat_id=group, message_thread_id=tid, text="context")
    assert sent["message_thread_id"] == tid and sent["is_topic_message"]
    agent_msg = await client.send_topic_message(AGENT, group, tid, "Hello Anna")
    assert agent_msg["message_thread_id"] == tid
    updates = await api.ok("getUpdates")
    update = Update.de_json(updates[-1], bot)
    assert update.message.message_thread_id == tid and update.message.text == "Hello Anna"
    assert await api.ok(
        "editForumTopic", chat_id=group, message_thread_id=tid, name="Anna (closed)"
    )
    assert (
        await api.err("editForumTopic", chat_id=group, message_thread_id=tid, name="Anna (closed)")
    )["description"] == "Bad Request: TOPIC_NOT_MODIFIED"
    assert await api.ok("closeForumTopic", chat_id=group, message_thread_id=tid)
    assert (await api.err("closeForumTopic", chat_id=group, message_thread_id=tid))[
        "description"
    ] == "Bad Request: TOPIC_NOT_MODIFIED"
    assert (await client.topics(group)) == [
        {"message_thread_id": tid, "name": "Anna (closed)", "icon_color": 7322096, "closed": True}
    ]
    assert await api.ok("reopenForumTopic", chat_id=group, message_thread_id=tid)
    body = await api.err("closeForumTopic", chat_id=group, message_thread_id=999)
    assert body["description"] == "Bad Request: message thread not found"
    transcript = await client.transcript(group, message_thread_id=tid)
    assert [r["kind"] for r in transcript] == [
        "service",
        "text",
        "text",
        "service",
        "service",
        "service",
    ]


async def test_topic_errors(api: Api, client: SandboxClient) -> None:
    plain = await client.create_supergroup(is_forum=False)
    body = await api.err("createForumTopic", chat_id=plain["id"], name="x")
    assert body["description"] == "Bad Request: the chat is not a forum"
    weak = await client.create_supergroup(bot_rights={"can_manage_topics": False})
    body = await api.err("createForumTopic", chat_id=weak["id"], name="x")
    assert body["description"] == "Bad Request: not enough rights to create a topic"


async def test_press_refuses_missing_buttons_unless_forged(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A")
    sent = await api.ok(
        "sendMessage",
        chat_id=1,
        text="q",
        reply_markup={"inline_keyboard": [[{"text": "a", "callback_data": "cancel:1"}]]},
    )
    with pytest.raises(SandboxError) as caught:
        await client.press_button(1, sent["message_id"], "cancel:2")
    assert caught.value.status == 409
    forged = await client.press_button(1, sent["message_id"], "cancel:2", forge=True)
    updates = await api.ok("getUpdates")
    assert updates[-1]["callback_query"]["data"] == "cancel:2"
    assert updates[-1]["callback_query"]["id"] == forged["id"]
    with pytest.raises(SandboxError):
        await client.press_button(1, 999, "x", forge=True)


async def test_wait_is_race_free_and_times_out(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A")
    msg = await client.send_message(1, "hi")
    await api.ok("sendMessage", chat_id=1, text="first")
    await api.ok("sendMessage", chat_id=1, text="second")
    # The reply arrived before anyone waited; "after the user's message" still finds it.
    assert (await client.wait_for_bot_message(1))["text"] == "first"
    found = await client.wait_for_bot_message(1, after_message_id=msg["message_id"] + 1)
    assert found["text"] == "second"
    with pytest.raises(TimeoutError):
        await client.wait_for_bot_message(1, after_message_id=found["message_id"], timeout=0.2)
    waiter = asyncio.create_task(
        client.wait_for_bot_message(1, after_message_id=found["message_id"])
    )
    await asyncio.sleep(0.05)
    await api.ok("sendMessage", chat_id=1, text="third")
    assert (await waiter)["text"] == "third"


async def test_say_collects_replies(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A")

    async def bot() -> None:
        updates = await api.ok("getUpdates", timeout=5)
        for text in ("one", "two"):
            await api.ok("sendMessage", chat_id=updates[0]["message"]["chat"]["id"], text=text)

    task = asyncio.create_task(bot())
    replies = await client.say(1, "hello", timeout=3, quiet=0.2)
    await task
    assert [r["text"] for r in replies] == ["one", "two"]


async def test_user_edits_media_blocking_and_reset(api: Api, client: SandboxClient) -> None:
    await client.create_user(1, first_name="A", language_code="es")
    msg = await client.send_message(1, "/ordr 100001")
    await client.edit_message(1, msg["message_id"], "/order 100001")
    await client.send_message(1, sticker="CAAC-1")
    await client.send_message(1, "look", photo="AgAC-9", reply_to=msg["message_id"])
    updates = await api.ok("getUpdates")
    assert updates[1]["edited_message"]["text"] == "/order 100001"
    assert updates[2]["message"]["sticker"]["file_id"] == "CAAC-1"
    assert updates[3]["message"]["reply_to_message"]["message_id"] == msg["message_id"]
    assert updates[3]["message"]["caption"] == "look"
    await client.block(1)
    with pytest.raises(SandboxError):
        await client.send_message(1, "while blocked")
    assert (await client.users())[0]["blocked"] is True
    await client.reset()
    assert await client.users() == [] and await client.calls() == []


async def test_caps_bound_memory(client: SandboxClient) -> None:
    sb = Sandbox(settings=Settings(transcript_cap=5, update_queue_cap=3, call_log_cap=4))
    await sb.start()
    try:
        async with SandboxClient(sb.url) as c:
            await c.create_user(1, first_name="A")
            for i in range(10):
                await c.send_message(1, f"m{i}")
            transcript = await c.transcript(1)
            assert [r["text"] for r in transcript] == [f"m{i}" for i in range(5, 10)]
            assert (await c.stats())["pending_updates"] == 3
            async with __import__("httpx").AsyncClient() as http:
                for _ in range(6):
                    await http.post(f"{sb.api_base}{sb.token}/getMe")
            assert len(await c.calls()) == 4
    finally:
        await sb.stop()


async def test_playground_is_served(sb: Sandbox, api: Api) -> None:
    resp = await api.http.get(f"{sb.url}/")
    assert resp.status_code == 200 and "<html" in resp.text.lower()
    for name in ("app.js", "style.css"):
        assert (await api.http.get(f"{sb.url}/static/{name}")).status_code == 200

"""Bot API methods and their error answers, over HTTP as a bot would call them."""

import json

import pytest
from telegram import Bot, Message, Update

from sandbox import Sandbox
from sandbox.client import SandboxClient
from tests.sandbox.conftest import Api

INLINE = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}


@pytest.fixture
async def anna(client: SandboxClient) -> int:
    await client.create_user(10, first_name="Anna", username="anna", language_code="de")
    return 10


async def test_get_me(api: Api) -> None:
    me = await api.ok("getMe")
    assert me["is_bot"] and me["username"] == "backorder_demo_bot" and me["id"] == 123456


async def test_wrong_token_and_unknown_method(sb: Sandbox, api: Api) -> None:
    resp = await api.http.post(f"{sb.api_base}1:WRONG/getMe")
    assert resp.status_code == 401
    assert resp.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    body = await api.err("sendTelepathy")
    assert body["description"] == "Not Found"


async def test_send_message_form_and_json_bodies(api: Api, anna: int) -> None:
    as_form = await api.ok("sendMessage", chat_id=anna, text="hi", reply_markup=INLINE)
    resp = await api("sendMessage", json=True, chat_id=anna, text="hi", reply_markup=INLINE)
    as_json = resp.json()["result"]
    string_markup = await api.ok(
        "sendMessage", chat_id=str(anna), text="hi", reply_markup=json.dumps(INLINE)
    )
    for msg in (as_form, as_json, string_markup):
        assert msg["reply_markup"] == INLINE
        assert msg["chat"] == {
            "id": anna,
            "type": "private",
            "first_name": "Anna",
            "username": "anna",
        }
    assert [as_form["message_id"], as_json["message_id"]] == [1, 2]


async def test_messages_parse_with_ptb(api: Api, anna: int, client: SandboxClient) -> None:
    bot = Bot("123456:SANDBOX-TOKEN")
    sent = await api.ok("sendMessage", chat_id=anna, text="<i>x</i>", parse_mode="HTML")
    msg = Message.de_json(sent, bot)
    assert msg is not None and msg.text == "x" and msg.entities[0].type == "italic"
    user_msg = await client.send_message(anna, "/help me")
    await client.press_button(anna, sent["message_id"], "x", forge=True)
    await client.block(anna)
    updates = await api.ok("getUpdates")
    kinds = []
    for raw in updates:
        update = Update.de_json(raw, bot)
        assert update is not None
        kinds.append(next(k for k in raw if k != "update_id"))
    assert kinds == ["message", "callback_query", "my_chat_member"]
    parsed = Update.de_json(updates[0], bot)
    assert parsed is not None and parsed.message is not None
    assert parsed.message.text == "/help me" and parsed.message.message_id == user_msg["message_id"]
    assert parsed.message.entities[0].type == "bot_command"


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"text": "x"}, "Bad Request: chat_id is empty"),
        ({"chat_id": 10}, "Bad Request: message text is empty"),
        ({"chat_id": 10, "text": "   "}, "Bad Request: message text is empty"),
        ({"chat_id": 999, "text": "x"}, "Bad Request: chat not found"),
        ({"chat_id": 10, "text": "x" * 4097}, "Bad Request: message is too long"),
        (
            {"chat_id": 10, "text": "x", "parse_mode": "Klingon"},
            "Bad Request: unsupported parse_mode",
        ),
        (
            {"chat_id": 10, "text": "x", "reply_markup": "{nope"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
        (
            {
                "chat_id": 10,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": "x" * 65}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            {
                "chat_id": 10,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": ""}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            {"chat_id": 10, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "a"}]]}},
            "Bad Request: text buttons are unallowed in the inline keyboard",
        ),
        (
            {"chat_id": 10, "text": "x", "reply_parameters": {"message_id": 77}},
            "Bad Request: message to be replied not found",
        ),
        (
            {"chat_id": 10, "text": "x", "message_thread_id": 5},
            "Bad Request: message thread not found",
        ),
    ],
)
async def test_send_message_errors(api: Api, anna: int, params: dict, description: str) -> None:
    body = await api.err("sendMessage", **params)
    assert body == {"ok": False, "error_code": 400, "description": description}


async def test_limits_are_inclusive(api: Api, anna: int) -> None:
    await api.ok("sendMessage", chat_id=anna, text="x" * 4096)
    # The limit counts characters after entity parsing, not markup.
    await api.ok("sendMessage", chat_id=anna, text="<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    data = "ü" * 32  # 64 bytes
    markup = {"inline_keyboard": [[{"text": "a", "callback_data": data}]]}
    await api.ok("sendMessage", chat_id=anna, text="x", reply_markup=markup)
    markup["inline_keyboard"][0][0]["callback_data"] = data + "a"
    body = await api.err("sendMessage", chat_id=anna, text="x", reply_markup=markup)
    assert body["description"] == "Bad Request: BUTTON_DATA_INVALID"


async def test_blocked_user_and_unstarted_chat(api: Api, client: SandboxClient, anna: int) -> None:
    await client.block(anna)
    body = await api.err("sendMessage", chat_id=anna, text="hi")
    assert body == {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    await client.unblock(anna)
    await api.ok("sendMessage", chat_id=anna, text="hi")
    await client.create_user(11, first_name="Bo", started=False)
    body = await api.err("sendMessage", chat_id=11, text="hi")
    assert body["description"] == "Forbidden: bot can't initiate conversation with a user"


async def test_edit_message_text_and_markup(api: Api, client: SandboxClient, anna: int) -> None:
    sent = await api.ok("sendMessage", chat_id=anna, text="one", reply_markup=INLINE)
    mid = sent["message_id"]
    body = await api.err(
        "editMessageText", chat_id=anna, message_id=mid, text="one", reply_markup=INLINE
    )
    assert body["description"].startswith("Bad Request: message is not modified: ")
    edited = await api.ok(
        "editMessageText", chat_id=anna, message_id=mid, text="<b>two</b>", parse_mode="HTML"
    )
    assert edited["text"] == "two" and "reply_markup" not in edited and edited["edit_date"]
    body = await api.err("editMessageReplyMarkup", chat_id=anna, message_id=mid)
    assert body["description"].startswith("Bad Request: message is not modified")
    edited = await api.ok(
        "editMessageReplyMarkup", chat_id=anna, message_id=mid, reply_markup=INLINE
    )
    assert edited["reply_markup"] == INLINE
    body = await api.err("editMessageText", chat_id=anna, message_id=999, text="x")
    assert body["description"] == "Bad Request: message to edit not found"
    user_msg = await client.send_message(anna, "mine")
    body = await api.err(
        "editMessageText", chat_id=anna, message_id=user_msg["message_id"], text="x"
    )
    assert body["description"] == "Bad Request: message can't be edited"
    [rec] = [r for r in await client.transcript(anna) if r["message_id"] == mid]
    assert [e["text"] for e in rec["edits"]] == ["one", "two"] and rec["text"] == "two"


async def test_delete_copy_forward(api: Api, client: SandboxClient, anna: int) -> None:
    await client.create_user(20, first_name="Agent")
    group = await client.create_supergroup(members=[20], is_forum=False)
    user_msg = await client.send_message(anna, "a photo", photo="PHOTO-1")
    copied = await api.ok(
        "copyMessage", chat_id=group["id"], from_chat_id=anna, message_id=user_msg["message_id"]
    )
    forwarded = await api.ok(
        "forwardMessage", chat_id=group["id"], from_chat_id=anna, message_id=user_msg["message_id"]
    )
    assert forwarded["forward_origin"]["sender_user"]["id"] == anna
    assert forwarded["photo"][0]["file_id"] == "PHOTO-1"
    transcript = await client.transcript(group["id"])
    assert [r["message_id"] for r in transcript] == [copied["message_id"], forwarded["message_id"]]
    assert transcript[0]["caption"] == "a photo"
    body = await api.err("copyMessage", chat_id=group["id"], from_chat_id=anna, message_id=99)
    assert body["description"] == "Bad Request: message to copy not found"
    assert (
        await api.ok("deleteMessage", chat_id=group["id"], message_id=copied["message_id"]) is True
    )
    body = await api.err("deleteMessage", chat_id=group["id"], message_id=copied["message_id"])
    assert body["description"] == "Bad Request: message to delete not found"
    assert (await client.transcript(group["id"]))[0]["deleted"] is True


async def test_media_by_file_id_and_upload(api: Api, anna: int) -> None:
    photo = await api.ok(
        "sendPhoto", chat_id=anna, photo="AgAC-1", caption="<b>c</b>", parse_mode="HTML"
    )
    assert (
        photo["photo"][-1]["file_id"] == "AgAC-1" and photo["caption_entities"][0]["type"] == "bold"
    )
    doc = await api.ok("sendDocument", chat_id=anna, document="BQAC-1")
    sticker = await api.ok("sendSticker", chat_id=anna, sticker="CAAC-1")
    voice = await api.ok("sendVoice", chat_id=anna, voice="AwAC-1")
    assert (
        doc["document"]["file_id"],
        sticker["sticker"]["file_id"],
        voice["voice"]["file_id"],
    ) == ("BQAC-1", "CAAC-1", "AwAC-1")
    body = await api.err("sendPhoto", chat_id=anna)
    assert body["description"] == "Bad Request: there is no photo in the request"
    resp = await api.http.post(
        f"{api.base}/sendDocument",
        data={"chat_id": str(anna)},
        files={"document": ("a.txt", b"hello")},
    )
    assert resp.json()["ok"] and resp.json()["result"]["document"]["file_id"]
    bot = Bot("123456:SANDBOX-TOKEN")
    for m in (photo, doc, sticker, voice):
        assert Message.de_json(m, bot) is not None


async def test_answer_callback_query(
    api: Api, client: SandboxClient, anna: int, sb: Sandbox
) -> None:
    sent = await api.ok("sendMessage", chat_id=anna, text="q", reply_markup=INLINE)
    query = await client.press_button(anna, sent["message_id"], "yes")
    assert await api.ok("answerCallbackQuery", callback_query_id=query["id"], text="done") is True
    assert (await client.callback_answer(query["id"]))["answer"]["text"] == "done"
    too_old = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    assert (await api.err("answerCallbackQuery", callback_query_id=query["id"]))[
        "description"
    ] == too_old
    assert (await api.err("answerCallbackQuery", callback_query_id="nope"))[
        "description"
    ] == too_old
    sb.settings.callback_timeout = 0
    late = await client.press_button(anna, sent["message_id"], "yes")
    assert (await api.err("answerCallbackQuery", callback_query_id=late["id"]))[
        "description"
    ] == too_old


async def test_chat_action_commands_chat_member(api: Api, client: SandboxClient, anna: int) -> None:
    assert await api.ok("sendChatAction", chat_id=anna, action="typing") is True
    body = await api.err("sendChatAction", chat_id=anna, action="dancing")
    assert body["description"] == "Bad Request: wrong parameter action in request"
    commands = [{"command": "start", "description": "Start"}]
    assert await api.ok("setMyCommands", commands=commands) is True
    assert await api.ok(
        "setMyCommands", commands=[{"command": "hilfe", "description": "Hilfe"}], language_code="de"
    )
    assert await api.ok("getMyCommands") == commands
    assert await api.ok("getMyCommands", language_code="de") == [
        {"command": "hilfe", "description": "Hilfe"}
    ]
    body = await api.err("setMyCommands", commands=[{"command": "Bad-Name", "description": "x"}])
    assert body["description"] == "Bad Request: BOT_COMMAND_INVALID"
    assert await api.ok("deleteMyCommands") is True and await api.ok("getMyCommands") == []
    bot = Bot("123456:SANDBOX-TOKEN")
    from telegram import ChatFullInfo, ChatMember

    chat = await api.ok("getChat", chat_id=anna)
    assert ChatFullInfo.de_json(chat, bot).first_name == "Anna"
    member = await api.ok("getChatMember", chat_id=anna, user_id=anna)
    assert ChatMember.de_json(member, bot).status == "member"
    await client.create_user(20, first_name="Agent")
    group = await client.create_supergroup(administrators=[20])
    admins = await api.ok("getChatAdministrators", chat_id=group["id"])
    statuses = [ChatMember.de_json(a, bot).status for a in admins]
    assert statuses == ["administrator", "administrator"]
    body = await api.err("getChatAdministrators", chat_id=anna)
    assert body["description"] == "Bad Request: there are no administrators in the private chat"

"""The Bot API methods: parameter checks with Telegram's error texts, then the change."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from sandbox._html import HtmlError, parse_html, utf16_len
from sandbox._world import (
    ApiError,
    ChatState,
    Record,
    Topic,
    Webhook,
    World,
    bad_request,
)

FILE_MARK = "__file__"  # marks a multipart upload in the parameters
UPLOAD_SIZE = "__size__"  # UPLOAD_SIZE + name: the bytes uploaded as that parameter
_CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
_SEND_METHODS = {
    "sendmessage",
    "sendphoto",
    "senddocument",
    "sendsticker",
    "sendvoice",
    "copymessage",
    "forwardmessage",
}


class Params:
    """Request parameters; form values arrive as strings, JSON values as JSON types."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def has(self, name: str) -> bool:
        return self.raw.get(name) not in (None, "")

    def text(self, name: str, missing: str | None = None) -> str | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if missing is not None:
                raise bad_request(missing)
            return None
        if value == FILE_MARK:
            return value
        return value if isinstance(value, str) else json.dumps(value)

    def integer(self, name: str, missing: str | None = None) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if missing is not None:
                raise bad_request(missing)
            return None
        if isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        value = self.raw.get(name)
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("true", "1")

    def json(self, name: str, invalid: str) -> Any:
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(invalid) from None
        return value


Handler = Callable[[World, Params], Awaitable[Any]]
_HANDLERS: dict[str, Handler] = {}


def _method(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name.lower()] = fn
        return fn

    return register


def method_names() -> list[str]:
    return sorted(_HANDLERS)


async def call(world: World, method: str, params: Params) -> Any:
    handler = _HANDLERS.get(method.lower())
    if handler is None:
        raise ApiError(404, "Not Found")
    return await handler(world, params)


# --- shared checks ---------------------------------------------------------------------------


def _chat_id(p: Params) -> int | str:
    value = p.raw.get("chat_id")
    if value is None or value == "":
        raise bad_request("chat_id is empty")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith("@"):
        return text
    try:
        return int(text)
    except ValueError:
        raise bad_request("chat not found") from None


def _find_chat(world: World, chat_id: int | str) -> ChatState:
    if isinstance(chat_id, str):
        raise bad_request("chat not found")
    return world.chat(chat_id)


def _target(world: World, p: Params) -> ChatState:
    """The chat a message goes to, refusing what Telegram refuses."""
    chat = _find_chat(world, _chat_id(p))
    if chat.is_private:
        assert chat.user_id is not None
        user = world.users[chat.user_id]
        if user.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if not user.started:
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
    return chat


def _thread(chat: ChatState, p: Params) -> int | None:
    thread_id = p.integer("message_thread_id")
    if thread_id is None or thread_id == 0:
        return None
    if not chat.is_forum or thread_id not in chat.topics:
        raise bad_request("message thread not found")
    return thread_id


def _rate_limit(world: World, chat: ChatState, method: str) -> None:
    retry = world.limiter.check(chat.id, chat.is_private, count_chat=method in _SEND_METHODS)
    if retry:
        raise ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry)


def _strip(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram trims surrounding whitespace and moves the entities with the text."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    end = utf16_len(stripped)
    kept = []
    for e in entities:
        start = max(0, e["offset"] - shift)
        stop = min(end, e["offset"] + e["length"] - shift)
        if stop > start:
            kept.append({**e, "offset": start, "length": stop - start})
    return stripped, kept


def _formatted(
    p: Params,
    text_name: str,
    mode_name: str,
    entities_name: str,
    empty: str,
    too_long: str,
    limit: int,
) -> tuple[str, list[dict[str, Any]]] | None:
    raw = p.raw.get(text_name)
    if raw is None or raw == "":
        if empty:
            raise bad_request(empty)
        return None
    text = str(raw)
    mode = (p.text(mode_name) or "").lower()
    entities: list[dict[str, Any]]
    if mode == "html":
        try:
            text, entities = parse_html(text)
        except HtmlError as err:
            raise bad_request(f"can't parse entities: {err}") from None
    elif mode in ("", "markdown", "markdownv2"):
        # Markdown is not reproduced: the text is taken literally.
        given = p.json(entities_name, "can't parse entities JSON object")
        entities = list(given) if isinstance(given, list) else []
    else:
        raise bad_request("unsupported parse_mode")
    text, entities = _strip(text, entities)
    if not text:
        if empty:
            raise bad_request(empty)
        return None
    if len(text) > limit:
        raise bad_request(too_long)
    return text, entities


def _text(world: World, p: Params) -> dict[str, Any]:
    found = _formatted(
        p,
        "text",
        "parse_mode",
        "entities",
        "message text is empty",
        "message is too long",
        world.settings.max_text_length,
    )
    assert found is not None
    content: dict[str, Any] = {"text": found[0]}
    if found[1]:
        content["entities"] = found[1]
    return content


def _caption(world: World, p: Params) -> dict[str, Any]:
    found = _formatted(
        p,
        "caption",
        "parse_mode",
        "caption_entities",
        "",
        "message caption is too long",
        world.settings.max_caption_length,
    )
    if found is None:
        return {}
    content: dict[str, Any] = {"caption": found[0]}
    if found[1]:
        content["caption_entities"] = found[1]
    return content


def _markup(p: Params) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(inline keyboard echoed in the message, reply keyboard kept for the transcript)."""
    markup = p.json("reply_markup", "can't parse reply keyboard markup JSON object")
    if markup is None:
        return None, None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return None, markup
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise bad_request(
            'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
        )
    clean_rows = []
    for row in rows:
        clean = []
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise bad_request("can't parse inline keyboard button: Text must be a String")
            if not button["text"].strip():
                raise bad_request("BUTTON_TEXT_INVALID")
            if "callback_data" in button:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
            elif "url" in button:
                url = str(button["url"])
                if not re.match(r"^(https?|tg)://\S+$", url):
                    raise bad_request(
                        f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL"
                    )
            elif not any(
                k in button
                for k in (
                    "switch_inline_query",
                    "switch_inline_query_current_chat",
                    "switch_inline_query_chosen_chat",
                    "web_app",
                    "login_url",
                    "pay",
                    "callback_game",
                    "copy_text",
                )
            ):
                raise bad_request("text buttons are unallowed in the inline keyboard")
            clean.append(button)
        if clean:
            clean_rows.append(clean)
    return {"inline_keyboard": clean_rows}, None


def _reply_to(world: World, chat: ChatState, p: Params) -> Record | None:
    reply_id = p.integer("reply_to_message_id")
    allow_missing = p.flag("allow_sending_without_reply")
    params = p.json("reply_parameters", "can't parse reply parameters JSON object")
    if isinstance(params, dict) and params.get("message_id") is not None:
        reply_id = int(params["message_id"])
        allow_missing = bool(params.get("allow_sending_without_reply", False))
    if reply_id is None:
        return None
    rec = world.record(chat, reply_id)
    if rec is None and not allow_missing:
        raise bad_request("message to be replied not found")
    return rec


def _send(
    world: World,
    p: Params,
    method: str,
    content_of: Callable[[ChatState], dict[str, Any]],
) -> dict[str, Any]:
    chat = _target(world, p)
    thread_id = _thread(chat, p)
    content = content_of(chat)
    inline, keyboard = _markup(p)
    reply_to = _reply_to(world, chat, p)
    _rate_limit(world, chat, method)
    if inline is not None:
        content["reply_markup"] = inline
    rec = world.add_message(
        chat,
        sender=world.bot_user,
        from_bot=True,
        content=content,
        reply_to=reply_to,
        thread_id=thread_id,
        keyboard=keyboard,
    )
    return rec.message


def _file_id(p: Params, kind: str) -> str:
    value = p.raw.get(kind)
    if value is None or value == "":
        raise bad_request(f"there is no {kind} in the request")
    if value == FILE_MARK or (isinstance(value, str) and value.startswith("attach://")):
        return f"sandbox-upload-{kind}-{abs(hash(str(p.raw.get('chat_id')))) % 10**8}"
    return str(value)


def media_content(kind: str, file_id: str) -> dict[str, Any]:
    unique = f"u{abs(hash(file_id)) % 10**10}"
    if kind == "photo":
        return {
            "photo": [
                {"file_id": file_id, "file_unique_id": unique, "width": 90, "height": 90},
                {"file_id": file_id, "file_unique_id": unique + "x", "width": 800, "height": 800},
            ]
        }
    if kind == "sticker":
        return {
            "sticker": {
                "file_id": file_id,
                "file_unique_id": unique,
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
        }
    if kind == "voice":
        return {"voice": {"file_id": file_id, "file_unique_id": unique, "duration": 3}}
    return {
        "document": {
            "file_id": file_id,
            "file_unique_id": unique,
            "file_name": "file.pdf",
            "mime_type": "application/pdf",
        }
    }


def _editable(world: World, p: Params) -> tuple[ChatState, Record]:
    if p.has("inline_message_id"):
        raise bad_request("MESSAGE_ID_INVALID")
    chat = _find_chat(world, _chat_id(p))
    message_id = p.integer("message_id", missing="message identifier is not specified")
    assert message_id is not None
    rec = world.record(chat, message_id)
    if rec is None:
        raise bad_request("message to edit not found")
    if not rec.from_bot:
        raise bad_request("message can't be edited")
    return chat, rec


# --- methods ---------------------------------------------------------------------------------


@_method("getMe")
async def _get_me(world: World, p: Params) -> Any:
    return world.bot


@_method("logOut")
async def _log_out(world: World, p: Params) -> Any:
    return True


@_method("close")
async def _close(world: World, p: Params) -> Any:
    return True


@_method("getUpdates")
async def _get_updates(world: World, p: Params) -> Any:
    if world.webhook is not None:
        raise ApiError(
            409,
            "Conflict: can't use getUpdates method while webhook is active; "
            "use deleteWebhook to delete the webhook first",
        )
    offset = p.integer("offset")
    limit = max(1, min(100, p.integer("limit") or 100))
    timeout = max(0, min(50, p.integer("timeout") or 0))
    allowed = p.json("allowed_updates", "can't parse allowed_updates JSON object")
    if isinstance(allowed, list):
        world.allowed_updates = {str(a) for a in allowed} or None
    if offset is not None:
        world.confirm(offset)
    if world.closing:
        return []
    world.poll_generation += 1
    generation = world.poll_generation
    # A newer poll ends this one with 409, as Telegram does.
    world.updates_signal.fire()
    await world.updates_signal.wait_for(
        lambda: (
            bool(world.updates)
            or world.poll_generation != generation
            or world.webhook is not None
            or world.closing
        ),
        timeout,
    )
    if world.poll_generation != generation:
        raise ApiError(
            409,
            "Conflict: terminated by other getUpdates request; "
            "make sure that only one bot instance is running",
        )
    if world.webhook is not None:
        return []
    return [u for _, u in zip(range(limit), list(world.updates), strict=False)]


@_method("setWebhook")
async def _set_webhook(world: World, p: Params) -> Any:
    url = p.text("url") or ""
    if not url:
        world.webhook = None
        world.updates_signal.fire()
        return True
    if not re.match(r"^https?://[^/\s]+", url):
        raise bad_request("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
    secret = p.text("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        raise bad_request("secret token contains unallowed characters")
    allowed = p.json("allowed_updates", "can't parse allowed_updates JSON object")
    if p.flag("drop_pending_updates"):
        world.updates.clear()
    world.webhook = Webhook(
        url=url,
        secret_token=secret,
        max_connections=p.integer("max_connections") or 40,
        allowed_updates=list(allowed) if isinstance(allowed, list) and allowed else None,
    )
    world.poll_generation += 1
    world.updates_signal.fire()
    return True


@_method("deleteWebhook")
async def _delete_webhook(world: World, p: Params) -> Any:
    world.webhook = None
    if p.flag("drop_pending_updates"):
        world.updates.clear()
    world.updates_signal.fire()
    return True


@_method("getWebhookInfo")
async def _get_webhook_info(world: World, p: Params) -> Any:
    hook = world.webhook
    info: dict[str, Any] = {
        "url": hook.url if hook else "",
        "has_custom_certificate": False,
        "pending_update_count": len(world.updates),
    }
    if hook:
        info["max_connections"] = hook.max_connections
        if hook.allowed_updates:
            info["allowed_updates"] = hook.allowed_updates
        if hook.last_error_date:
            info["last_error_date"] = hook.last_error_date
            info["last_error_message"] = hook.last_error_message
    return info


@_method("sendMessage")
async def _send_message(world: World, p: Params) -> Any:
    return _send(world, p, "sendmessage", lambda chat: _text(world, p))


def _media_method(kind: str, with_caption: bool) -> Handler:
    async def send(world: World, p: Params) -> Any:
        def content(chat: ChatState) -> dict[str, Any]:
            c = media_content(kind, _file_id(p, kind))
            size = p.raw.get(UPLOAD_SIZE + kind)
            if kind == "photo" and isinstance(size, int):
                c["photo"][-1]["file_size"] = size
            if with_caption:
                c.update(_caption(world, p))
            return c

        return _send(world, p, f"send{kind}", content)

    return send


_HANDLERS["sendphoto"] = _media_method("photo", True)
_HANDLERS["senddocument"] = _media_method("document", True)
_HANDLERS["sendsticker"] = _media_method("sticker", False)
_HANDLERS["sendvoice"] = _media_method("voice", True)


@_method("editMessageText")
async def _edit_message_text(world: World, p: Params) -> Any:
    chat, rec = _editable(world, p)
    content = _text(world, p)
    inline, _ = _markup(p)
    if "text" not in rec.message:
        raise bad_request("there is no text in the message to edit")
    same_text = rec.message.get("text") == content["text"] and rec.message.get(
        "entities", []
    ) == content.get("entities", [])
    if same_text and rec.message.get("reply_markup") == inline:
        raise bad_request(_NOT_MODIFIED)
    _rate_limit(world, chat, "editmessagetext")
    if inline is not None:
        content["reply_markup"] = inline
    world.edit_message(rec, content, drop=("entities", "reply_markup"))
    return rec.message


@_method("editMessageCaption")
async def _edit_message_caption(world: World, p: Params) -> Any:
    chat, rec = _editable(world, p)
    content = _caption(world, p)
    inline, _ = _markup(p)
    if "text" in rec.message:
        raise bad_request("there is no caption in the message to edit")
    _rate_limit(world, chat, "editmessagecaption")
    if inline is not None:
        content["reply_markup"] = inline
    world.edit_message(rec, content, drop=("caption", "caption_entities", "reply_markup"))
    return rec.message


@_method("editMessageReplyMarkup")
async def _edit_message_reply_markup(world: World, p: Params) -> Any:
    chat, rec = _editable(world, p)
    inline, _ = _markup(p)
    if rec.message.get("reply_markup") == inline:
        raise bad_request(_NOT_MODIFIED)
    _rate_limit(world, chat, "editmessagereplymarkup")
    world.edit_message(rec, {"reply_markup": inline} if inline else {}, drop=("reply_markup",))
    return rec.message


@_method("deleteMessage")
async def _delete_message(world: World, p: Params) -> Any:
    chat = _find_chat(world, _chat_id(p))
    message_id = p.integer("message_id", missing="message identifier is not specified")
    assert message_id is not None
    rec = world.record(chat, message_id)
    if rec is None:
        raise bad_request("message to delete not found")
    if (
        not rec.from_bot
        and not chat.is_private
        and not (chat.bot_rights or {}).get("can_delete_messages")
    ):
        raise bad_request("message can't be deleted")
    rec.deleted = True
    world.messages_signal.fire()
    return True


@_method("answerCallbackQuery")
async def _answer_callback_query(world: World, p: Params) -> Any:
    query_id = p.text("callback_query_id") or ""
    query = world.callbacks.get(query_id)
    too_old = "query is too old and response timeout expired or query ID is invalid"
    loop_now = asyncio.get_running_loop().time()
    if (
        query is None
        or query.answered
        or loop_now - query.created > world.settings.callback_timeout
    ):
        raise bad_request(too_old)
    text = p.text("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    query.answered = True
    query.answer = {
        "text": text,
        "show_alert": p.flag("show_alert"),
        "url": p.text("url"),
        "cache_time": p.integer("cache_time") or 0,
    }
    world.messages_signal.fire()
    return True


def _source(world: World, p: Params, what: str) -> Record:
    from_chat = world.chats.get(int(_chat_id(Params({"chat_id": p.raw.get("from_chat_id")}))))
    message_id = p.integer("message_id", missing="message identifier is not specified")
    assert message_id is not None
    rec = world.record(from_chat, message_id) if from_chat else None
    if rec is None:
        raise bad_request(f"message to {what} not found")
    return rec


_CONTENT_KEYS = (
    "text",
    "entities",
    "caption",
    "caption_entities",
    "photo",
    "document",
    "sticker",
    "voice",
)


@_method("copyMessage")
async def _copy_message(world: World, p: Params) -> Any:
    src = _source(world, p, "copy")

    def content(chat: ChatState) -> dict[str, Any]:
        c = {k: v for k, v in src.message.items() if k in _CONTENT_KEYS}
        if p.has("caption") and "text" not in c:
            c.pop("caption_entities", None)
            c.update(_caption(world, p))
        return c

    msg = _send(world, p, "copymessage", content)
    return {"message_id": msg["message_id"]}


@_method("forwardMessage")
async def _forward_message(world: World, p: Params) -> Any:
    src = _source(world, p, "forward")

    def content(chat: ChatState) -> dict[str, Any]:
        c = {k: v for k, v in src.message.items() if k in _CONTENT_KEYS}
        sender = src.message["from"]
        c["forward_origin"] = {"type": "user", "sender_user": sender, "date": src.message["date"]}
        return c

    return _send(world, p, "forwardmessage", content)


@_method("sendChatAction")
async def _send_chat_action(world: World, p: Params) -> Any:
    chat = _target(world, p)
    _thread(chat, p)
    if p.text("action") not in _CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    return True


def _commands_key(p: Params) -> str:
    scope = p.json("scope", "can't parse BotCommandScope JSON object") or {"type": "default"}
    return json.dumps([scope, p.text("language_code") or ""], sort_keys=True)


@_method("setMyCommands")
async def _set_my_commands(world: World, p: Params) -> Any:
    commands = p.json("commands", "can't parse commands JSON object")
    if not isinstance(commands, list):
        raise bad_request("can't parse commands JSON object")
    if len(commands) > 100:
        raise bad_request("too many commands specified")
    for command in commands:
        name = str(command.get("command", "")) if isinstance(command, dict) else ""
        if not _COMMAND_NAME_RE.match(name):
            raise bad_request("BOT_COMMAND_INVALID")
        description = str(command.get("description", ""))
        if not 1 <= len(description) <= 256:
            raise bad_request("command description is empty")
    world.commands[_commands_key(p)] = [
        {"command": c["command"], "description": c["description"]} for c in commands
    ]
    return True


@_method("getMyCommands")
async def _get_my_commands(world: World, p: Params) -> Any:
    return world.commands.get(_commands_key(p), [])


@_method("deleteMyCommands")
async def _delete_my_commands(world: World, p: Params) -> Any:
    world.commands.pop(_commands_key(p), None)
    return True


@_method("getChat")
async def _get_chat(world: World, p: Params) -> Any:
    return world.chat_full(_find_chat(world, _chat_id(p)))


@_method("getChatMember")
async def _get_chat_member(world: World, p: Params) -> Any:
    chat = _find_chat(world, _chat_id(p))
    user_id = p.integer("user_id", missing="user not found")
    assert user_id is not None
    return world.member_public(chat, user_id)


@_method("getChatAdministrators")
async def _get_chat_administrators(world: World, p: Params) -> Any:
    chat = _find_chat(world, _chat_id(p))
    if chat.is_private:
        raise bad_request("there are no administrators in the private chat")
    admins = [
        world.member_public(chat, uid)
        for uid, status in chat.members.items()
        if status in ("creator", "administrator")
    ]
    if chat.bot_rights is not None:
        admins.append(world.member_public(chat, world.bot["id"]))
    return admins


@_method("getChatMemberCount")
async def _get_chat_member_count(world: World, p: Params) -> Any:
    chat = _find_chat(world, _chat_id(p))
    return 2 if chat.is_private else len(chat.members) + 1


def _forum(world: World, p: Params, right: str) -> ChatState:
    chat = _find_chat(world, _chat_id(p))
    if not chat.is_forum:
        raise bad_request("the chat is not a forum")
    if not (chat.bot_rights or {}).get("can_manage_topics"):
        raise bad_request(f"not enough rights to {right}")
    return chat


def _topic(chat: ChatState, p: Params) -> Topic:
    thread_id = p.integer("message_thread_id", missing="message thread not found")
    topic = chat.topics.get(thread_id or 0)
    if topic is None:
        raise bad_request("message thread not found")
    return topic


def _service(world: World, chat: ChatState, topic: Topic, content: dict[str, Any]) -> None:
    world.add_message(
        chat,
        sender=world.bot_user,
        from_bot=True,
        content=content,
        thread_id=topic.message_thread_id,
    )


@_method("createForumTopic")
async def _create_forum_topic(world: World, p: Params) -> Any:
    chat = _forum(world, p, "create a topic")
    name = p.text("name", missing="TOPIC_TITLE_EMPTY")
    assert name is not None
    if len(name) > 128:
        raise bad_request("TOPIC_TITLE_INVALID")
    _rate_limit(world, chat, "createforumtopic")
    thread_id = chat.next_message_id
    topic = Topic(
        message_thread_id=thread_id,
        name=name,
        icon_color=p.integer("icon_color") or 7322096,
        icon_custom_emoji_id=p.text("icon_custom_emoji_id"),
    )
    chat.topics[thread_id] = topic
    # The topic's id is the id of the service message that opens it.
    world.add_message(
        chat,
        sender=world.bot_user,
        from_bot=True,
        content={"forum_topic_created": {"name": name, "icon_color": topic.icon_color}},
        message_id=thread_id,
    )
    opening = chat.messages[thread_id].message
    opening["message_thread_id"] = thread_id
    opening["is_topic_message"] = True
    return topic.public()


@_method("editForumTopic")
async def _edit_forum_topic(world: World, p: Params) -> Any:
    chat = _forum(world, p, "edit a topic")
    topic = _topic(chat, p)
    name = p.text("name")
    emoji = p.text("icon_custom_emoji_id")
    if name is not None and len(name) > 128:
        raise bad_request("TOPIC_TITLE_INVALID")
    if (name is None or name == topic.name) and (
        emoji is None or emoji == topic.icon_custom_emoji_id
    ):
        raise bad_request("TOPIC_NOT_MODIFIED")
    edited: dict[str, Any] = {}
    if name is not None:
        topic.name = edited["name"] = name
    if emoji is not None:
        topic.icon_custom_emoji_id = edited["icon_custom_emoji_id"] = emoji
    _service(world, chat, topic, {"forum_topic_edited": edited})
    return True


async def _set_closed(world: World, p: Params, closed: bool) -> Any:
    chat = _forum(world, p, "manage topics")
    topic = _topic(chat, p)
    if topic.closed == closed:
        raise bad_request("TOPIC_NOT_MODIFIED")
    topic.closed = closed
    _service(world, chat, topic, {"forum_topic_closed" if closed else "forum_topic_reopened": {}})
    return True


@_method("closeForumTopic")
async def _close_forum_topic(world: World, p: Params) -> Any:
    return await _set_closed(world, p, True)


@_method("reopenForumTopic")
async def _reopen_forum_topic(world: World, p: Params) -> Any:
    return await _set_closed(world, p, False)


@_method("deleteForumTopic")
async def _delete_forum_topic(world: World, p: Params) -> Any:
    chat = _forum(world, p, "delete a topic")
    topic = _topic(chat, p)
    del chat.topics[topic.message_thread_id]
    for rec in chat.messages.values():
        if rec.message.get("message_thread_id") == topic.message_thread_id:
            rec.deleted = True
    return True


@_method("getFile")
async def _get_file(world: World, p: Params) -> Any:
    file_id = p.text("file_id", missing="invalid file_id")
    assert file_id is not None
    return {
        "file_id": file_id,
        "file_unique_id": f"u{abs(hash(file_id)) % 10**10}",
        "file_size": 4,
        "file_path": f"files/{abs(hash(file_id)) % 10**10}",
    }

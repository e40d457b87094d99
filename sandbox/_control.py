"""The control API: what users, agents and tests do on the Telegram side."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox._botapi import media_content
from sandbox._world import (
    ADMIN_RIGHTS,
    CallbackQuery,
    ChatState,
    ControlError,
    Record,
    User,
    World,
    command_entities,
    now,
)

_MEDIA = ("photo", "document", "sticker", "voice")
_CONTENT = ("text", *_MEDIA)
_ROUTES = web.RouteTableDef()
_WORLD = web.AppKey("world", World)

ControlHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, world: World) -> None:
    app[_WORLD] = world
    app.add_routes(_ROUTES)


def _world(request: web.Request) -> World:
    return request.app[_WORLD]


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ControlError(400, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ControlError(400, "body must be a JSON object")
    return body


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be an integer") from None


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None or value == "" else _int(value, name)


def _user(world: World, user_id: Any) -> User:
    user = world.users.get(_int(user_id, "user_id"))
    if user is None:
        raise ControlError(404, f"no user {user_id}")
    return user


def _chat(world: World, chat_id: Any) -> ChatState:
    chat = world.chats.get(_int(chat_id, "chat_id"))
    if chat is None:
        raise ControlError(404, f"no chat {chat_id}")
    return chat


def _ok(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda o: json.dumps(o, ensure_ascii=False))


# --- users and chats -------------------------------------------------------------------------


def create_user(world: World, body: dict[str, Any]) -> User:
    user_id = _int(body.get("id", body.get("user_id")), "id")
    if user_id <= 0:
        raise ControlError(400, "a user id is a positive integer")
    user = User(
        id=user_id,
        first_name=str(body.get("first_name") or f"User{user_id}"),
        last_name=body.get("last_name"),
        username=body.get("username"),
        language_code=body.get("language_code"),
        started=bool(body.get("started", True)),
    )
    old = world.users.get(user_id)
    if old is not None:
        user.blocked = old.blocked
    world.users[user_id] = user
    if user_id not in world.chats:
        world.chats[user_id] = ChatState(id=user_id, type="private", user_id=user_id)
    return user


@_ROUTES.post("/control/users")
async def _create_user(request: web.Request) -> web.Response:
    return _ok(create_user(_world(request), await _body(request)).control())


@_ROUTES.get("/control/users")
async def _list_users(request: web.Request) -> web.Response:
    return _ok([u.control() for u in _world(request).users.values()])


@_ROUTES.post("/control/supergroups")
async def _create_supergroup(request: web.Request) -> web.Response:
    world = _world(request)
    body = await _body(request)
    chat_id = _opt_int(body.get("id", body.get("chat_id")), "id")
    if chat_id is None:
        chat_id = world.next_group_id
        world.next_group_id -= 1
    if chat_id >= 0:
        raise ControlError(400, "a supergroup id is negative (-100...)")
    members: dict[int, str] = {}
    for uid in body.get("members") or []:
        members[_user(world, uid).id] = "member"
    for uid in body.get("administrators") or []:
        members[_user(world, uid).id] = "administrator"
    if body.get("creator") is not None:
        members[_user(world, body["creator"]).id] = "creator"
    rights: dict[str, bool] | None
    if body.get("bot_is_admin", True):
        given = body.get("bot_rights") or {}
        unknown = set(given) - set(ADMIN_RIGHTS)
        if unknown:
            raise ControlError(400, f"unknown rights: {', '.join(sorted(unknown))}")
        rights = {k: bool(given.get(k, True)) for k in ADMIN_RIGHTS}
    else:
        rights = None
    chat = ChatState(
        id=chat_id,
        type="supergroup",
        title=str(body.get("title") or "Support"),
        is_forum=bool(body.get("is_forum", True)),
        members=members,
        bot_rights=rights,
    )
    world.chats[chat_id] = chat
    return _ok(_chat_info(world, chat))


def _chat_info(world: World, chat: ChatState) -> dict[str, Any]:
    return {
        "id": chat.id,
        "type": chat.type,
        "title": chat.title,
        "user_id": chat.user_id,
        "is_forum": chat.is_forum,
        "members": {str(k): v for k, v in chat.members.items()},
        "bot_rights": chat.bot_rights,
        "topics": [_topic_info(t) for t in chat.topics.values()],
        "last_message_id": chat.next_message_id - 1,
    }


def _topic_info(topic: Any) -> dict[str, Any]:
    d: dict[str, Any] = topic.public()
    d["closed"] = topic.closed
    return d


@_ROUTES.get("/control/chats")
async def _list_chats(request: web.Request) -> web.Response:
    world = _world(request)
    return _ok([_chat_info(world, c) for c in world.chats.values()])


@_ROUTES.get("/control/chats/{chat_id}")
async def _get_chat(request: web.Request) -> web.Response:
    world = _world(request)
    return _ok(_chat_info(world, _chat(world, request.match_info["chat_id"])))


@_ROUTES.get("/control/chats/{chat_id}/topics")
async def _topics(request: web.Request) -> web.Response:
    chat = _chat(_world(request), request.match_info["chat_id"])
    return _ok([_topic_info(t) for t in chat.topics.values()])


@_ROUTES.get("/control/chats/{chat_id}/transcript")
async def _transcript(request: web.Request) -> web.Response:
    chat = _chat(_world(request), request.match_info["chat_id"])
    thread = _opt_int(request.query.get("message_thread_id"), "message_thread_id")
    after = _opt_int(request.query.get("after_message_id"), "after_message_id") or 0
    records = [
        r.control()
        for mid, r in chat.messages.items()
        if mid > after and (thread is None or r.message.get("message_thread_id") == thread)
    ]
    return _ok(records)


# --- what users do ---------------------------------------------------------------------------


def _sender_chat(world: World, body: dict[str, Any]) -> tuple[User, ChatState]:
    user = _user(world, body.get("user_id"))
    chat = _chat(world, body.get("chat_id", user.id))
    if chat.is_private and chat.user_id != user.id:
        raise ControlError(403, "a user can only write in their own private chat")
    if chat.is_private and user.blocked:
        raise ControlError(409, "the user has blocked the bot; unblock first")
    if not chat.is_private and user.id not in chat.members:
        raise ControlError(403, f"user {user.id} is not a member of chat {chat.id}")
    return user, chat


def send_user_message(world: World, body: dict[str, Any]) -> Record:
    user, chat = _sender_chat(world, body)
    thread_id = _opt_int(body.get("message_thread_id"), "message_thread_id")
    if thread_id is not None:
        topic = chat.topics.get(thread_id)
        if topic is None:
            raise ControlError(404, f"no topic {thread_id} in chat {chat.id}")
        if topic.closed and chat.members.get(user.id) not in ("creator", "administrator"):
            raise ControlError(403, "the topic is closed")
    content: dict[str, Any] = {}
    text = body.get("text")
    media = [k for k in _MEDIA if body.get(k)]
    if len(media) > 1:
        raise ControlError(400, "one message carries at most one media file")
    if media:
        kind = media[0]
        content.update(media_content(kind, str(body[kind])))
        caption = body.get("caption", text)
        if caption and kind != "sticker":
            content["caption"] = str(caption)
    elif text is None or not str(text).strip():
        raise ControlError(400, "a message needs text or a media file_id")
    else:
        text = str(text)
        if len(text) > world.settings.max_text_length:
            raise ControlError(400, "message is too long")
        content["text"] = text
        entities = command_entities(text)
        if entities:
            content["entities"] = entities
    reply_to = None
    reply_id = _opt_int(body.get("reply_to"), "reply_to")
    if reply_id is not None:
        reply_to = world.record(chat, reply_id)
        if reply_to is None:
            raise ControlError(404, f"no message {reply_id} to reply to")
    user.started = True
    rec = world.add_message(
        chat,
        sender=user.public(),
        from_bot=False,
        content=content,
        reply_to=reply_to,
        thread_id=thread_id,
    )
    world.enqueue("message", rec.message)
    return rec


@_ROUTES.post("/control/messages")
async def _send_message(request: web.Request) -> web.Response:
    return _ok(send_user_message(_world(request), await _body(request)).control())


def _press_last(world: World, user_id: Any, data: str) -> str:
    """A user presses ``data`` on the last bot message of their private chat (forged: the
    button need not be on it). Returns the callback query id."""
    user = _user(world, user_id)
    chat = _chat(world, user.id)
    if user.blocked:
        raise ControlError(409, "the user has blocked the bot; unblock first")
    rec = next((r for r in reversed(chat.messages.values()) if r.from_bot), None)
    if rec is None:
        raise ControlError(409, f"no bot message in chat {chat.id} to press on")
    query = CallbackQuery(
        id=str(7_000_000_000_000_000 + world.next_callback_id),
        chat_id=chat.id,
        message_id=rec.message["message_id"],
        user_id=user.id,
        data=data,
        created=asyncio.get_running_loop().time(),
    )
    world.next_callback_id += 1
    world.remember_callback(query)
    world.enqueue(
        "callback_query",
        {
            "id": query.id,
            "from": user.public(),
            "message": rec.message,
            "chat_instance": str(abs(chat.id) * 7919 % 10**12),
            "data": data,
        },
    )
    return query.id


@_ROUTES.post("/control/bulk")
async def _bulk(request: web.Request) -> web.Response:
    """Many users and updates in one call, for load drivers: ``{"users": [{"id": ...}],
    "messages": [{"user_id": ..., "text": ...} | {"user_id": ..., "press": data}]}``.
    Items are applied in order; the answer carries the wall-clock time (``time.time()``) at
    which the updates became available, and per message its message id or callback query id.
    A bad item stops the batch with its index; the items before it stay applied."""
    world = _world(request)
    body = await _body(request)
    users = body.get("users") or []
    messages = body.get("messages") or []
    if not isinstance(users, list) or not isinstance(messages, list):
        raise ControlError(400, "users and messages must be lists")
    done: list[dict[str, Any]] = []
    for i, item in enumerate([*users, *messages]):
        if not isinstance(item, dict):
            raise ControlError(400, f"item {i} is not an object")
        try:
            if i < len(users):
                create_user(world, item)
            elif "press" in item:
                query_id = _press_last(world, item.get("user_id"), str(item["press"]))
                done.append({"chat_id": _int(item["user_id"], "user_id"), "query_id": query_id})
            else:
                rec = send_user_message(world, item)
                chat_id = rec.message["chat"]["id"]
                done.append({"chat_id": chat_id, "message_id": rec.message_id})
        except ControlError as err:
            raise ControlError(err.status, f"item {i}: {err.message}") from None
    return _ok({"time": time.time(), "users": len(users), "messages": done})


@_ROUTES.post("/control/edits")
async def _edit_message(request: web.Request) -> web.Response:
    world = _world(request)
    body = await _body(request)
    user, chat = _sender_chat(world, body)
    rec = world.record(chat, _int(body.get("message_id"), "message_id"))
    if rec is None or rec.from_bot or rec.message["from"]["id"] != user.id:
        raise ControlError(404, "no message of this user to edit")
    if "text" not in rec.message:
        raise ControlError(400, "only text messages can be edited here")
    text = str(body.get("text") or "")
    if not text.strip():
        raise ControlError(400, "text is empty")
    changes: dict[str, Any] = {"text": text}
    entities = command_entities(text)
    if entities:
        changes["entities"] = entities
    world.edit_message(rec, changes, drop=("entities",))
    world.enqueue("edited_message", rec.message)
    return _ok(rec.control())


@_ROUTES.post("/control/press")
async def _press(request: web.Request) -> web.Response:
    world = _world(request)
    body = await _body(request)
    chat = _chat(world, body.get("chat_id"))
    user_id = body.get("user_id", chat.user_id)
    if user_id is None:
        raise ControlError(400, "user_id is needed to press a button in a group")
    user = _user(world, user_id)
    if chat.is_private and user.blocked:
        raise ControlError(409, "the user has blocked the bot; unblock first")
    message_id = _int(body.get("message_id"), "message_id")
    rec = world.record(chat, message_id)
    if rec is None or not rec.from_bot:
        raise ControlError(404, f"no bot message {message_id} in chat {chat.id}")
    data = str(body.get("data", ""))
    if not body.get("forge") and not any(
        b.get("callback_data") == data for b in rec.inline_buttons()
    ):
        raise ControlError(409, f"message {message_id} has no button with data {data!r}")
    query = CallbackQuery(
        id=str(7_000_000_000_000_000 + world.next_callback_id),
        chat_id=chat.id,
        message_id=message_id,
        user_id=user.id,
        data=data,
        created=asyncio.get_running_loop().time(),
    )
    world.next_callback_id += 1
    world.remember_callback(query)
    world.enqueue(
        "callback_query",
        {
            "id": query.id,
            "from": user.public(),
            "message": rec.message,
            "chat_instance": str(abs(chat.id) * 7919 % 10**12),
            "data": data,
        },
    )
    return _ok(query.control())


@_ROUTES.get("/control/callbacks/{query_id}")
async def _callback(request: web.Request) -> web.Response:
    world = _world(request)
    query_id = request.match_info["query_id"]
    timeout = min(60.0, float(request.query.get("timeout", 0)))

    def answered() -> bool:
        q = world.callbacks.get(query_id)
        return q is None or q.answered

    await world.messages_signal.wait_for(answered, timeout)
    query = world.callbacks.get(query_id)
    if query is None:
        raise ControlError(404, f"no callback query {query_id}")
    return _ok(query.control())


async def _set_blocked(request: web.Request, blocked: bool) -> web.Response:
    world = _world(request)
    body = await _body(request)
    user = _user(world, body.get("user_id"))
    if user.blocked != blocked:
        user.blocked = blocked
        old, new = ("member", "kicked") if blocked else ("kicked", "member")
        member: dict[str, Any] = {"user": world.bot_user, "status": new}
        if blocked:
            member["until_date"] = 0
        previous: dict[str, Any] = {"user": world.bot_user, "status": old}
        if not blocked:
            previous["until_date"] = 0
        world.enqueue(
            "my_chat_member",
            {
                "chat": world.chat_public(world.chats[user.id]),
                "from": user.public(),
                "date": now(),
                "old_chat_member": previous,
                "new_chat_member": member,
            },
        )
    return _ok(user.control())


@_ROUTES.post("/control/block")
async def _block(request: web.Request) -> web.Response:
    return await _set_blocked(request, True)


@_ROUTES.post("/control/unblock")
async def _unblock(request: web.Request) -> web.Response:
    return await _set_blocked(request, False)


# --- waiting for the bot ---------------------------------------------------------------------


@_ROUTES.get("/control/chats/{chat_id}/wait")
async def _wait(request: web.Request) -> web.Response:
    """The bot's first message after ``after_message_id`` (default: the last user message)."""
    world = _world(request)
    chat = _chat(world, request.match_info["chat_id"])
    q = request.query
    after = _opt_int(q.get("after_message_id"), "after_message_id")
    if after is None:
        after = chat.last_user_message_id
    thread = _opt_int(q.get("message_thread_id"), "message_thread_id")
    timeout = max(0.0, min(120.0, float(q.get("timeout", 5.0))))
    include_service = q.get("include_service") in ("1", "true")
    found: list[Record] = []

    def ready() -> bool:
        for mid, rec in chat.messages.items():
            if mid <= after or not rec.from_bot:
                continue
            if thread is not None and rec.message.get("message_thread_id") != thread:
                continue
            if not include_service and not any(k in rec.message for k in _CONTENT):
                continue
            found.append(rec)
            return True
        return False

    if await world.messages_signal.wait_for(ready, timeout):
        return _ok({"message": found[0].control()})
    return _ok({"message": None})


# --- the log, limits, faults, reset ----------------------------------------------------------


@_ROUTES.get("/control/calls")
async def _calls(request: web.Request) -> web.Response:
    world = _world(request)
    method = (request.query.get("method") or "").lower()
    since = _opt_int(request.query.get("since"), "since") or 0
    calls = [
        c for c in world.calls if c["seq"] > since and (not method or c["method"].lower() == method)
    ]
    return _ok({"calls": calls, "count_429": world.count_429, "total": world.call_seq})


@_ROUTES.get("/control/stats")
async def _stats(request: web.Request) -> web.Response:
    world = _world(request)
    return _ok(
        {
            "calls": world.call_seq,
            "count_429": world.count_429,
            "by_method": world.method_counts,
            "pending_updates": len(world.updates),
            "dropped_updates": world.dropped_updates,
            "users": len(world.users),
            "chats": len(world.chats),
            "webhook": world.webhook.url if world.webhook else None,
        }
    )


@_ROUTES.get("/control/limits")
async def _get_limits(request: web.Request) -> web.Response:
    return _ok(_world(request).limiter.limits.as_dict())


@_ROUTES.post("/control/limits")
async def _set_limits(request: web.Request) -> web.Response:
    world = _world(request)
    try:
        limits = world.limiter.configure(**(await _body(request)))
    except (TypeError, ValueError) as err:
        raise ControlError(400, str(err)) from None
    return _ok(limits.as_dict())


@_ROUTES.post("/control/faults")
async def _add_fault(request: web.Request) -> web.Response:
    world = _world(request)
    body = await _body(request)
    try:
        fault = world.faults.add(
            kind=str(body.get("kind")),
            method=body.get("method"),
            count=_opt_int(body.get("count"), "count"),
            duration=None if body.get("duration") is None else float(body["duration"]),
            retry_after=int(body.get("retry_after", 5)),
            delay=float(body.get("delay", 1.0)),
            status=int(body.get("status", 500)),
            chat_id=_opt_int(body.get("chat_id"), "chat_id"),
        )
    except (TypeError, ValueError) as err:
        raise ControlError(400, str(err)) from None
    return _ok(fault.public())


@_ROUTES.get("/control/faults")
async def _list_faults(request: web.Request) -> web.Response:
    return _ok([f.public() for f in _world(request).faults.faults])


@_ROUTES.post("/control/faults/{fault_id}/release")
async def _release_fault(request: web.Request) -> web.Response:
    fault = _world(request).faults.release(_int(request.match_info["fault_id"], "fault_id"))
    if fault is None:
        raise ControlError(404, f"no fault {request.match_info['fault_id']}")
    return _ok(fault.public())


@_ROUTES.delete("/control/faults")
async def _clear_faults(request: web.Request) -> web.Response:
    _world(request).faults.clear()
    return _ok({"ok": True})


@_ROUTES.post("/control/reset")
async def _reset(request: web.Request) -> web.Response:
    _world(request).reset()
    return _ok({"ok": True})


@_ROUTES.get("/control/bot")
async def _bot(request: web.Request) -> web.Response:
    world = _world(request)
    return _ok(
        {
            "user": world.bot,
            "webhook": world.webhook.url if world.webhook else None,
            "commands": [[*json.loads(k), v] for k, v in world.commands.items()],
        }
    )


@web.middleware
async def control_errors(request: web.Request, handler: ControlHandler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as err:
        return web.json_response({"error": err.message}, status=err.status)

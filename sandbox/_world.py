"""Everything the sandbox remembers: users, chats, messages, updates, callbacks, the call log."""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox._html import utf16_len
from sandbox._limits import FaultInjector, Limits, RateLimiter

# Telegram leaves these out unless a bot asks for them by name.
_OPT_IN_UPDATES = {"chat_member", "message_reaction", "message_reaction_count"}
_COMMAND_RE = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")
_ACCEPTED_GIFTS = {
    "unlimited_gifts": False,
    "limited_gifts": False,
    "unique_gifts": False,
    "premium_subscription": False,
    "gifts_from_channels": False,
}
ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_pin_messages",
    "can_manage_topics",
)


class ApiError(Exception):
    """A Bot API error answer, shaped like Telegram's."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


class ControlError(Exception):
    """A refused control call (a test asked for something that cannot happen)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Settings:
    """Caps that keep a long benchmark from growing memory without limit."""

    transcript_cap: int = 2000  # messages kept per chat
    update_queue_cap: int = 10_000  # undelivered updates kept
    call_log_cap: int = 5_000  # Bot API calls kept in the log
    callback_cap: int = 10_000  # callback queries remembered
    callback_timeout: float = 15.0  # seconds a callback query can still be answered
    max_text_length: int = 4096
    max_caption_length: int = 1024
    # The first update's id. Telegram never hands out an id twice; a bot whose store saved the
    # ids of an earlier sandbox's updates takes an id it has answered for a re-delivery.
    first_update_id: int = 1


@dataclass
class User:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    blocked: bool = False  # the user blocked the bot
    started: bool = True  # the user has opened the chat with the bot

    def public(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d

    def control(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Topic:
    message_thread_id: int
    name: str
    icon_color: int = 7322096
    icon_custom_emoji_id: str | None = None
    closed: bool = False

    def public(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "message_thread_id": self.message_thread_id,
            "name": self.name,
            "icon_color": self.icon_color,
        }
        if self.icon_custom_emoji_id:
            d["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return d


@dataclass
class Record:
    """One message in a transcript, with its history."""

    message: dict[str, Any]
    from_bot: bool
    keyboard: dict[str, Any] | None = None  # a reply keyboard (Telegram does not echo it)
    edits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def message_id(self) -> int:
        return int(self.message["message_id"])

    def inline_buttons(self) -> Iterator[dict[str, Any]]:
        markup = self.message.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            yield from row

    def control(self) -> dict[str, Any]:
        m = self.message
        kind = next(
            (k for k in ("text", "photo", "document", "sticker", "voice") if k in m), "service"
        )
        reply = m.get("reply_to_message")
        return {
            "message_id": self.message_id,
            "from_bot": self.from_bot,
            "sender_id": (m.get("from") or {}).get("id"),
            "date": m["date"],
            "kind": kind,
            "text": m.get("text"),
            "caption": m.get("caption"),
            "entities": m.get("entities") or m.get("caption_entities") or [],
            "reply_markup": m.get("reply_markup"),
            "keyboard": self.keyboard,
            "message_thread_id": m.get("message_thread_id"),
            "reply_to_message_id": reply["message_id"] if reply else None,
            "edit_date": m.get("edit_date"),
            "edits": self.edits,
            "deleted": self.deleted,
            "message": m,
        }


@dataclass
class ChatState:
    id: int
    type: str  # "private" or "supergroup"
    title: str | None = None
    user_id: int | None = None  # the user of a private chat
    is_forum: bool = False
    members: dict[int, str] = field(default_factory=dict)  # user id -> status
    bot_rights: dict[str, bool] | None = None  # None: the bot is a plain member
    topics: dict[int, Topic] = field(default_factory=dict)
    messages: OrderedDict[int, Record] = field(default_factory=OrderedDict)
    next_message_id: int = 1
    last_user_message_id: int = 0

    @property
    def is_private(self) -> bool:
        return self.type == "private"


@dataclass
class CallbackQuery:
    id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str
    created: float
    answered: bool = False
    answer: dict[str, Any] | None = None

    def control(self) -> dict[str, Any]:
        d = asdict(self)
        del d["created"]
        return d


@dataclass
class Webhook:
    url: str
    secret_token: str | None = None
    max_connections: int = 40
    allowed_updates: list[str] | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None


class Notifier:
    """Wakes every waiter whenever something happened; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(
        self,
        ready: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = self._event
            try:
                # asyncio.timeout: Python 3.11's wait_for can lose a cancellation.
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                return ready()
        return True


def now() -> int:
    return int(time.time())


def command_entities(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "bot_command", "offset": utf16_len(text[: m.start()]), "length": utf16_len(m[0])}
        for m in _COMMAND_RE.finditer(text)
    ]


class World:
    def __init__(
        self, token: str, bot_username: str, bot_first_name: str, settings: Settings
    ) -> None:
        self.token = token
        self.settings = settings
        self.bot: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        # Messages carry only the basic user fields; getMe adds the bot's capabilities.
        self.bot_user = {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")}
        self.limiter = RateLimiter(Limits())
        self.faults = FaultInjector()
        self.closing = False
        self.updates_signal = Notifier()
        self.messages_signal = Notifier()
        self.reset()

    def reset(self) -> None:
        self.users: dict[int, User] = {}
        self.chats: dict[int, ChatState] = {}
        self.updates: deque[dict[str, Any]] = deque()
        self.next_update_id = self.settings.first_update_id
        self.dropped_updates = 0
        self.allowed_updates: set[str] | None = None
        self.webhook: Webhook | None = None
        self.poll_generation = 0
        self.callbacks: OrderedDict[str, CallbackQuery] = OrderedDict()
        self.next_callback_id = 1
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.calls: deque[dict[str, Any]] = deque(maxlen=self.settings.call_log_cap)
        self.call_seq = 0
        self.count_429 = 0
        self.method_counts: dict[str, int] = {}
        self.next_group_id = -1001000000001
        self.limiter.reset()
        self.faults.clear()
        self.updates_signal.fire()
        self.messages_signal.fire()

    # --- updates -------------------------------------------------------------------------

    def enqueue(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        allowed = self.webhook.allowed_updates if self.webhook else None
        allowed_set = set(allowed) if allowed else self.allowed_updates
        if allowed_set is None:
            if kind in _OPT_IN_UPDATES:
                return None
        elif kind not in allowed_set:
            return None
        update = {"update_id": self.next_update_id, kind: payload}
        self.next_update_id += 1
        self.updates.append(update)
        while len(self.updates) > self.settings.update_queue_cap:
            self.updates.popleft()
            self.dropped_updates += 1
        self.updates_signal.fire()
        return update

    def confirm(self, offset: int) -> None:
        """Forget updates below ``offset`` (negative: keep only the last -offset)."""
        if offset < 0:
            keep = -offset
            while len(self.updates) > keep:
                self.updates.popleft()
            return
        while self.updates and self.updates[0]["update_id"] < offset:
            self.updates.popleft()

    # --- lookups -------------------------------------------------------------------------

    def chat(self, chat_id: int | str) -> ChatState:
        if isinstance(chat_id, str):
            chat_id = int(chat_id)
        chat = self.chats.get(chat_id)
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def record(self, chat: ChatState, message_id: int) -> Record | None:
        rec = chat.messages.get(message_id)
        return None if rec is None or rec.deleted else rec

    def chat_public(self, chat: ChatState) -> dict[str, Any]:
        if chat.is_private:
            assert chat.user_id is not None
            d = self.users[chat.user_id].public()
            d.pop("is_bot", None)
            d.pop("language_code", None)
            d["type"] = "private"
            return d
        d = {"id": chat.id, "type": chat.type, "title": chat.title}
        if chat.is_forum:
            d["is_forum"] = True
        return d

    def chat_full(self, chat: ChatState) -> dict[str, Any]:
        d = self.chat_public(chat)
        d.update(accent_color_id=0, max_reaction_count=11, accepted_gift_types=_ACCEPTED_GIFTS)
        return d

    def member_public(self, chat: ChatState, user_id: int) -> dict[str, Any]:
        if user_id == self.bot["id"]:
            if chat.bot_rights is None:
                return {"status": "member", "user": self.bot_user}
            rights = {k: chat.bot_rights.get(k, False) for k in ADMIN_RIGHTS}
            return {
                "status": "administrator",
                "user": self.bot_user,
                "can_be_edited": False,
                "is_anonymous": False,
                **rights,
            }
        user = self.users.get(user_id)
        if user is None:
            raise bad_request("user not found")
        status = chat.members.get(user_id, "left")
        if chat.is_private:
            status = "member" if user_id == chat.user_id else "left"
        base: dict[str, Any] = {"status": status, "user": user.public()}
        if status == "creator":
            base["is_anonymous"] = False
        elif status == "administrator":
            base.update(
                can_be_edited=False,
                is_anonymous=False,
                **dict.fromkeys(ADMIN_RIGHTS, True),
            )
        elif status == "kicked":
            base["until_date"] = 0
        return base

    # --- messages ------------------------------------------------------------------------

    def add_message(
        self,
        chat: ChatState,
        *,
        sender: dict[str, Any],
        from_bot: bool,
        content: dict[str, Any],
        reply_to: Record | None = None,
        thread_id: int | None = None,
        keyboard: dict[str, Any] | None = None,
        message_id: int | None = None,
    ) -> Record:
        mid = message_id if message_id is not None else chat.next_message_id
        chat.next_message_id = max(chat.next_message_id, mid + 1)
        msg: dict[str, Any] = {
            "message_id": mid,
            "from": sender,
            "date": now(),
            "chat": self.chat_public(chat),
        }
        if thread_id is not None and chat.is_forum:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
            if reply_to is None:
                # Telegram makes every topic message a reply to the topic's opening message.
                reply_to = chat.messages.get(thread_id)
        if reply_to is not None:
            quoted = dict(reply_to.message)
            quoted.pop("reply_to_message", None)
            msg["reply_to_message"] = quoted
        msg.update(content)
        rec = Record(message=msg, from_bot=from_bot, keyboard=keyboard)
        chat.messages[mid] = rec
        while len(chat.messages) > self.settings.transcript_cap:
            chat.messages.popitem(last=False)
        if not from_bot:
            chat.last_user_message_id = mid
        if from_bot:
            self.messages_signal.fire()
        return rec

    def edit_message(self, rec: Record, changes: dict[str, Any], drop: tuple[str, ...]) -> None:
        m = rec.message
        rec.edits.append(
            {
                "date": m.get("edit_date", m["date"]),
                "text": m.get("text"),
                "caption": m.get("caption"),
                "reply_markup": m.get("reply_markup"),
            }
        )
        del rec.edits[: -self.settings.transcript_cap]
        for key in drop:
            m.pop(key, None)
        m.update(changes)
        m["edit_date"] = now()
        self.messages_signal.fire()

    # --- the call log --------------------------------------------------------------------

    def log_call(self, method: str, params: dict[str, Any], status: int, description: str) -> None:
        self.call_seq += 1
        self.method_counts[method] = self.method_counts.get(method, 0) + 1
        if status == 429:
            self.count_429 += 1
        self.calls.append(
            {
                "seq": self.call_seq,
                "time": time.time(),
                "method": method,
                "params": params,
                "status": status,
                "ok": status == 200,
                "description": description,
            }
        )

    def remember_callback(self, query: CallbackQuery) -> None:
        self.callbacks[query.id] = query
        while len(self.callbacks) > self.settings.callback_cap:
            self.callbacks.popitem(last=False)

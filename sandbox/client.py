"""The sandbox's control API over HTTP, for tests, the demo and benchmarks."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import httpx


class SandboxError(Exception):
    """The sandbox refused a control call."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class SandboxClient:
    """``async with SandboxClient(url) as c: await c.say(user_id, "hello")``."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        verb: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"params": query}
        if body is not None:
            kwargs["json"] = {k: v for k, v in body.items() if v is not None}
        if timeout is not None:
            kwargs["timeout"] = timeout + 10
        resp = await self._http.request(verb, f"/control/{path}", **kwargs)
        data = resp.json()
        if resp.status_code >= 400:
            raise SandboxError(resp.status_code, data.get("error", resp.text))
        return data

    # --- users and chats -------------------------------------------------------------------

    async def create_user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        last_name: str | None = None,
        started: bool = True,
    ) -> dict[str, Any]:
        """Create (or replace) a user; their private chat has the user's id."""
        body = {
            "id": user_id,
            "first_name": first_name,
            "username": username,
            "language_code": language_code,
            "last_name": last_name,
            "started": started,
        }
        result: dict[str, Any] = await self._call("POST", "users", body)
        return result

    async def users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "users")
        return result

    async def create_supergroup(
        self,
        title: str = "Support",
        chat_id: int | None = None,
        members: list[int] | None = None,
        administrators: list[int] | None = None,
        creator: int | None = None,
        is_forum: bool = True,
        bot_is_admin: bool = True,
        bot_rights: dict[str, bool] | None = None,
    ) -> dict[str, Any]:
        """A supergroup (a forum by default) in which the bot is an admin unless told not."""
        body = {
            "id": chat_id,
            "title": title,
            "members": members,
            "administrators": administrators,
            "creator": creator,
            "is_forum": is_forum,
            "bot_is_admin": bot_is_admin,
            "bot_rights": bot_rights,
        }
        result: dict[str, Any] = await self._call("POST", "supergroups", body)
        return result

    async def chats(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "chats")
        return result

    async def chat(self, chat_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"chats/{chat_id}")
        return result

    async def topics(self, chat_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", f"chats/{chat_id}/topics")
        return result

    async def transcript(
        self,
        chat_id: int,
        message_thread_id: int | None = None,
        after_message_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every kept message of the chat, both ways, with markup, edits and deletions."""
        params = {"message_thread_id": message_thread_id, "after_message_id": after_message_id}
        result: list[dict[str, Any]] = await self._call(
            "GET", f"chats/{chat_id}/transcript", params=params
        )
        return result

    # --- what users do ---------------------------------------------------------------------

    async def send_message(
        self,
        user_id: int,
        text: str | None = None,
        *,
        chat_id: int | None = None,
        message_thread_id: int | None = None,
        reply_to: int | None = None,
        photo: str | None = None,
        document: str | None = None,
        sticker: str | None = None,
        voice: str | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """A user's message (to their private chat unless ``chat_id``); returns it."""
        body = {
            "user_id": user_id,
            "text": text,
            "chat_id": chat_id,
            "message_thread_id": message_thread_id,
            "reply_to": reply_to,
            "photo": photo,
            "document": document,
            "sticker": sticker,
            "voice": voice,
            "caption": caption,
        }
        result: dict[str, Any] = await self._call("POST", "messages", body)
        return result

    async def send_topic_message(
        self, user_id: int, chat_id: int, message_thread_id: int, text: str
    ) -> dict[str, Any]:
        """An agent's message into a forum topic."""
        return await self.send_message(
            user_id, text, chat_id=chat_id, message_thread_id=message_thread_id
        )

    async def edit_message(
        self, user_id: int, message_id: int, text: str, chat_id: int | None = None
    ) -> dict[str, Any]:
        body = {"user_id": user_id, "message_id": message_id, "text": text, "chat_id": chat_id}
        result: dict[str, Any] = await self._call("POST", "edits", body)
        return result

    async def press_button(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        forge: bool = False,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Press an inline button; returns the callback query (``id``, ``answered``...)."""
        body = {
            "chat_id": chat_id,
            "message_id": message_id,
            "data": data,
            "forge": forge,
            "user_id": user_id,
        }
        result: dict[str, Any] = await self._call("POST", "press", body)
        return result

    async def callback_answer(
        self,
        query_id: str,
        timeout: float = 0.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The callback query, waiting up to ``timeout`` s for the bot to answer it."""
        result: dict[str, Any] = await self._call(
            "GET", f"callbacks/{query_id}", params={"timeout": timeout}, timeout=timeout
        )
        return result

    async def block(self, user_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "block", {"user_id": user_id})
        return result

    async def unblock(self, user_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "unblock", {"user_id": user_id})
        return result

    async def bulk(
        self,
        users: list[dict[str, Any]] | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Many users and updates in one call (load drivers). ``messages`` items are
        ``{"user_id", "text"}`` or ``{"user_id", "press": data}`` (a forged press on the
        chat's last bot message). Returns ``{"time", "users", "messages": [{"chat_id",
        "message_id" | "query_id"}]}``, ``time`` being the sandbox's ``time.time()`` when the
        updates became available."""
        result: dict[str, Any] = await self._call(
            "POST", "bulk", {"users": users or [], "messages": messages or []}
        )
        return result

    # --- waiting for the bot ---------------------------------------------------------------

    async def wait_for_bot_message(
        self,
        chat_id: int,
        after_message_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
        message_thread_id: int | None = None,
    ) -> dict[str, Any]:
        """The bot's first message after ``after_message_id`` (default: the chat's last user
        message). Raises ``TimeoutError`` if none arrives in time."""
        found = await self._poll(chat_id, after_message_id, timeout, message_thread_id)
        if found is None:
            raise TimeoutError(f"no bot message in chat {chat_id} within {timeout} s")
        return found

    async def _poll(
        self,
        chat_id: int,
        after_message_id: int | None,
        timeout: float,  # noqa: ASYNC109
        message_thread_id: int | None = None,
    ) -> dict[str, Any] | None:
        params = {
            "after_message_id": after_message_id,
            "timeout": timeout,
            "message_thread_id": message_thread_id,
        }
        data = await self._call("GET", f"chats/{chat_id}/wait", params=params, timeout=timeout)
        message: dict[str, Any] | None = data["message"]
        return message

    async def collect(
        self,
        chat_id: int,
        after_message_id: int,
        timeout: float = 5.0,  # noqa: ASYNC109
        quiet: float = 0.3,
        message_thread_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """The bot's messages after a message id, until it has been quiet for ``quiet`` s."""
        replies: list[dict[str, Any]] = []
        last = after_message_id
        wait = timeout
        while True:
            found = await self._poll(chat_id, last, wait, message_thread_id)
            if found is None:
                return replies
            replies.append(found)
            last = found["message_id"]
            wait = quiet

    async def say(
        self,
        user_id: int,
        text: str,
        timeout: float = 5.0,  # noqa: ASYNC109
        quiet: float = 0.3,
    ) -> list[dict[str, Any]]:
        """Send as the user and collect the bot's replies (empty if it says nothing)."""
        sent = await self.send_message(user_id, text)
        return await self.collect(user_id, sent["message_id"], timeout=timeout, quiet=quiet)

    async def press(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        timeout: float = 5.0,  # noqa: ASYNC109
        quiet: float = 0.3,
        forge: bool = False,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Press a button; returns the answered callback query and the bot's new messages."""
        before = (await self.chat(chat_id))["last_message_id"]
        query = await self.press_button(chat_id, message_id, data, forge=forge)
        replies, answered = await asyncio.gather(
            self.collect(chat_id, before, timeout=timeout, quiet=quiet),
            self.callback_answer(query["id"], timeout=timeout),
        )
        return answered, replies

    # --- log, limits, faults ---------------------------------------------------------------

    async def calls(self, method: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Logged Bot API calls (method, params, status, description), oldest first."""
        data = await self._call("GET", "calls", params={"method": method, "since": since})
        result: list[dict[str, Any]] = data["calls"]
        return result

    async def count_429(self) -> int:
        data = await self._call("GET", "calls", params={"since": 1 << 62})
        return int(data["count_429"])

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "stats")
        return result

    async def set_limits(
        self,
        enabled: bool | None = None,
        private_per_sec: float | None = None,
        private_burst: int | None = None,
        group_per_min: float | None = None,
        group_burst: int | None = None,
        global_per_sec: float | None = None,
        global_burst: int | None = None,
    ) -> dict[str, Any]:
        body = {
            "enabled": enabled,
            "private_per_sec": private_per_sec,
            "private_burst": private_burst,
            "group_per_min": group_per_min,
            "group_burst": group_burst,
            "global_per_sec": global_per_sec,
            "global_burst": global_burst,
        }
        result: dict[str, Any] = await self._call("POST", "limits", body)
        return result

    async def inject_fault(
        self,
        kind: str,
        method: str | None = None,
        count: int | None = None,
        duration: float | None = None,
        retry_after: int = 5,
        delay: float = 1.0,
        status: int = 500,
        chat_id: int | None = None,
    ) -> dict[str, Any]:
        """Make Bot API calls fail: ``kind`` is "429", "5xx", "slow", "drop" (no answer, not
        executed), "drop_after" (executed, answer lost) or "hold" (no answer until
        ``release_fault``, then executed); for ``count`` calls and/or ``duration`` seconds (one
        call if neither), for one ``method`` or all, and for the calls to one ``chat_id`` or
        all. The fault as listed by ``faults`` (its ``id``; ``held``: calls held now)."""
        body = {
            "chat_id": chat_id,
            "kind": kind,
            "method": method,
            "count": count,
            "duration": duration,
            "retry_after": retry_after,
            "delay": delay,
            "status": status,
        }
        result: dict[str, Any] = await self._call("POST", "faults", body)
        return result

    async def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "faults")
        return result

    async def release_fault(self, fault_id: int) -> dict[str, Any]:
        """Let the calls a "hold" fault holds go on (clear_faults releases them too)."""
        result: dict[str, Any] = await self._call("POST", f"faults/{fault_id}/release")
        return result

    async def clear_faults(self) -> None:
        await self._call("DELETE", "faults")

    async def reset(self) -> None:
        """Forget users, chats, updates, the log and faults (limits stay as configured)."""
        await self._call("POST", "reset")

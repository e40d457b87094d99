"""The typed context every handler receives: the store, the settings and the renderer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Update
from telegram.ext import Application, CallbackContext, ExtBot

from bot.i18n import choose_language
from bot.render import Renderer
from bot.settings import Settings
from store.chats import Chat, ChatState, chat_state
from store.db import Store


class BotData:
    """Application-wide dependencies. PTB creates it empty; build_application fills it."""

    settings: Settings
    store: Store
    renderer: Renderer
    now: Callable[[], datetime]  # aware UTC; tests replace it to move time


class BotContext(CallbackContext[ExtBot[int], dict[Any, Any], dict[Any, Any], BotData]):
    """PTB builds one context per update and hands it to every handler that runs for it, in
    every group; so what is read about the chat once is kept here for the others."""

    def __init__(
        self,
        application: Application[Any, Any, Any, Any, Any, Any],
        chat_id: int | None = None,
        user_id: int | None = None,
    ) -> None:
        super().__init__(application, chat_id, user_id)
        # (chat id, the store's write count when read, what was read)
        self._chat_read: tuple[int, int, ChatState] | None = None
        # This update wrote its own chat since: the row read is older than the store's.
        self._own_write_since_read = False

    @property
    def store(self) -> Store:
        return self.bot_data.store

    @property
    def settings(self) -> Settings:
        return self.bot_data.settings

    @property
    def renderer(self) -> Renderer:
        return self.bot_data.renderer

    def now(self) -> datetime:
        return self.bot_data.now()

    async def chat_state(self, chat_id: int) -> ChatState:
        """The chat as the store has it, read once per update and read again after a counted
        write transaction of this process has ended (any chat's: cheap to check, and never
        stale, whoever wrote) or after this update wrote its own chat (`own_chat_write`)."""
        store = self.store
        seen = self._chat_read
        if (
            seen is not None
            and seen[0] == chat_id
            and seen[1] == store.writes
            and not self._own_write_since_read
        ):
            return seen[2]
        writes = store.writes
        state = await store.read(lambda conn: chat_state(conn, chat_id))
        self._chat_read = (chat_id, writes, state)
        self._own_write_since_read = False
        return state

    async def chat(self, chat_id: int) -> Chat | None:
        return (await self.chat_state(chat_id)).chat

    def remember(self, chat: Chat) -> None:
        """The chat as this update's own write left it (`own_chat_write`): no need to read it
        again; whether a person owns the thread or the customer is reachable did not change."""
        seen = self._chat_read
        if seen is not None and seen[0] == chat.chat_id:
            # The write count of the first read stays: a counted write since still means
            # the flags are to be read again.
            self._chat_read = (chat.chat_id, seen[1], replace(seen[2], chat=chat))
            self._own_write_since_read = False

    @asynccontextmanager
    async def own_chat_write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that writes only this update's own chat (its misses, its pending
        question, its language, its row on first contact). No other update holds that chat's
        state (a chat's updates run one at a time), so the store's write count, which makes
        every update in flight read its chat again, is left alone: only this one reads again."""
        try:
            async with self.store.begin_small(counted=False) as conn:
                yield conn
        finally:
            self._own_write_since_read = True

    async def language_for(self, update: object) -> str:
        """The reader's language: saved choice, then Telegram's language_code, then the shop's."""
        saved: str | None = None
        telegram_code: str | None = None
        if isinstance(update, Update):
            if update.effective_user is not None:
                telegram_code = update.effective_user.language_code
            if update.effective_chat is not None:
                chat = await self.chat(update.effective_chat.id)
                saved = chat.language if chat is not None else None
        return choose_language(saved, telegram_code, self.settings.default_language)


BotApplication = Application[ExtBot[int], BotContext, dict[Any, Any], dict[Any, Any], BotData, Any]

"""The typed context every handler receives: the store, the settings and the renderer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from telegram import Update
from telegram.ext import Application, CallbackContext, ExtBot

from bot.i18n import choose_language
from bot.render import Renderer
from bot.settings import Settings
from store.chats import chat_of
from store.db import Store


class BotData:
    """Application-wide dependencies. PTB creates it empty; build_application fills it."""

    settings: Settings
    store: Store
    renderer: Renderer
    now: Callable[[], datetime]  # aware UTC; tests replace it to move time


class BotContext(CallbackContext[ExtBot[int], dict[Any, Any], dict[Any, Any], BotData]):
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

    async def language_for(self, update: object) -> str:
        """The reader's language: saved choice, then Telegram's language_code, then the shop's."""
        saved: str | None = None
        telegram_code: str | None = None
        if isinstance(update, Update):
            if update.effective_user is not None:
                telegram_code = update.effective_user.language_code
            if update.effective_chat is not None:
                async with self.store.connect() as conn:
                    chat = await chat_of(conn, update.effective_chat.id)
                saved = chat.language if chat is not None else None
        return choose_language(saved, telegram_code, self.settings.default_language)


BotApplication = Application[ExtBot[int], BotContext, dict[Any, Any], dict[Any, Any], BotData, Any]

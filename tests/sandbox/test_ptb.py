"""A real python-telegram-bot Application runs against the sandbox."""

import asyncio

from telegram import Message, Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from sandbox import Sandbox
from sandbox.client import SandboxClient


async def test_ptb_application_polls_and_replies(sb: Sandbox, client: SandboxClient) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_html(f"<b>echo</b> {update.effective_message.text}")

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("welcome")

    app = Application.builder().token(sb.token).base_url(sb.api_base).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    await client.create_user(7, first_name="Anna", language_code="de")
    await app.initialize()
    assert app.bot.username == "backorder_demo_bot"
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        assert [m["text"] for m in await client.say(7, "/start")] == ["welcome"]
        replies = await client.say(7, "hello")
        assert [m["text"] for m in replies] == ["echo hello"]
        assert replies[0]["entities"][0]["type"] == "bold"
        parsed = Message.de_json(replies[0]["message"], app.bot)
        assert parsed is not None and parsed.text == "echo hello"
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
    await asyncio.sleep(0)

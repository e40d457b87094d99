"""LINK_SECRET is all that stands between a link code and a customer's account: a code signed
with any other secret (the README's development secret, or the shop's secret before it was
replaced) is refused as an invalid link and links nothing, end to end through the sandbox."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.context import BotApplication
from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.links import DEVELOPMENT_SECRET, make_link_code
from store.schema import chats, used_link_tokens
from tests.conftest import START, Clock, bot_settings, running_bot, texts

QUIET = 0.3
ANNA, JOHN = 1, 2

INVALID = (
    "Sorry, this link doesn't work. Perhaps it was not copied completely.\n"
    "You can link your account here instead with your order number and e-mail address: "
    "tap “Link my account”."
)
LINKED = (
    "✅ Done: this chat is now linked to the customer account of {name}.\n"
    "I'll tell you here when a delivery date changes."
)

OLD_SECRET = "the-shops-first-secret-0123456789abcdef"
NEW_SECRET = "the-shops-second-secret-9876543210zyxwv"


def code(secret: str, customer: int) -> str:
    return make_link_code(secret, customer, expires_at=START + timedelta(days=7))


async def links(store: Store) -> dict[int, int]:
    """Chat -> customer, for every linked chat."""
    async with store.connect() as conn:
        rows = await conn.execute(
            select(chats.c.chat_id, chats.c.customer_id).where(chats.c.customer_id.is_not(None))
        )
        return {row.chat_id: row.customer_id for row in rows}


async def used_tokens(store: Store) -> int:
    async with store.connect() as conn:
        return len((await conn.execute(select(used_link_tokens))).all())


async def test_a_code_signed_with_the_development_secret_links_nothing(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    # What an attacker makes with the secret printed in the README, for Anna's account.
    forged = code(DEVELOPMENT_SECRET, ANNA)
    await tg.create_user(701, first_name="Mallory", language_code="en")
    replies = await tg.say(701, f"/start {forged}", quiet=QUIET)
    assert texts(replies) == [INVALID]
    assert await links(store) == {}
    assert await used_tokens(store) == 0


async def test_after_a_new_link_secret_codes_signed_with_the_old_one_link_nothing(
    sandbox: Sandbox, tg: SandboxClient, store: Store, clock: Clock, db_url: str
) -> None:
    old_code_used, old_code_kept = code(OLD_SECRET, ANNA), code(OLD_SECRET, JOHN)
    await tg.create_user(711, first_name="Anna", language_code="en")
    await tg.create_user(712, first_name="John", language_code="en")
    old = bot_settings(sandbox, db_url, {"LINK_SECRET": OLD_SECRET})
    async with running_bot(old, store, clock):
        # Before the change, the old secret's codes work: the one below is refused for its
        # signature alone.
        replies = await tg.say(711, f"/start {old_code_used}", quiet=QUIET)
        assert texts(replies)[0].startswith(LINKED.format(name="Anna Schmidt"))
    assert await links(store) == {711: ANNA}

    new = bot_settings(sandbox, db_url, {"LINK_SECRET": NEW_SECRET})
    async with running_bot(new, store, clock):
        replies = await tg.say(712, f"/start {old_code_kept}", quiet=QUIET)
        assert texts(replies) == [INVALID]
        assert await links(store) == {711: ANNA}
        assert await used_tokens(store) == 1
        # The shop's new e-mails carry codes signed with the new secret.
        replies = await tg.say(712, f"/start {code(NEW_SECRET, JOHN)}", quiet=QUIET)
        assert texts(replies)[0].startswith(LINKED.format(name="John Smith"))
    assert await links(store) == {711: ANNA, 712: JOHN}

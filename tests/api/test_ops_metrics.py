"""The bot's counters after a known sequence through the sandbox: messages from a customer,
then a round of notices meeting a 429, a 5xx, a timeout and a blocked customer. Counters are
process-wide, so each is read before and after: the difference is exact."""

from __future__ import annotations

import pytest

from bot import metrics
from bot.context import BotApplication
from bot.notices import deliver_due
from sandbox.client import SandboxClient
from store import Store
from tests.bot.notice_helpers import seed
from tests.bot.test_notice_faults import slip

CUSTOMER = 612_001

COUNTED = [
    ("backorder_updates_handled_total", {"kind": "message"}),
    ("backorder_update_handling_seconds_count", {"kind": "message"}),
    *(
        ("backorder_telegram_requests_total", {"channel": c, "method": "sendMessage", "outcome": o})
        for c in ("reply", "notice")
        for o in ("ok", "429", "5xx", "403", "timeout")
    ),
]


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {"REQUEST_TIMEOUT": "0.5", "NOTICE_JOB_INTERVAL_SECONDS": "0"}


def snapshot() -> list[float]:
    return [metrics.value(name, **labels) for name, labels in COUNTED]


@pytest.mark.sqlite_only(
    "the counters are the bot's, the same whatever the store; test_ops reads the store's"
    " gauges on both backends, test_notice_faults the delivery itself"
)
async def test_updates_replies_and_notices_are_counted_by_kind_and_outcome(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    made = await seed(store, tg, 6)
    chats = [chat for _, chat, _ in made]
    await tg.create_user(CUSTOMER, first_name="Mia", language_code="en")
    before = snapshot()
    calls = len(await tg.calls())
    for text in ("/start", "is the desk lamp in stock?", "thanks"):
        await tg.say(CUSTOMER, text)
    replies = [c for c in await tg.calls("sendMessage", since=calls)]
    assert replies and all(c["status"] == 200 for c in replies)

    await slip(bot, store)
    await tg.inject_fault("429", method="sendMessage", count=1, retry_after=1, chat_id=chats[0])
    await tg.inject_fault("5xx", method="sendMessage", count=1, status=502, chat_id=chats[1])
    await tg.inject_fault("slow", method="sendMessage", count=1, delay=1.0, chat_id=chats[2])
    await tg.block(chats[3])
    report = await deliver_due(bot)
    # The 429 is waited out in the round; the 5xx and the timeout are tried later.
    assert (report.sent, report.rate_limited, report.retried, report.unreachable) == (3, 1, 2, 1)

    after = snapshot()
    delta = {
        (name, tuple(labels.values())): a - b
        for (name, labels), a, b in zip(COUNTED, after, before, strict=True)
    }
    assert delta == {
        ("backorder_updates_handled_total", ("message",)): 3,
        ("backorder_update_handling_seconds_count", ("message",)): 3,
        ("backorder_telegram_requests_total", ("reply", "sendMessage", "ok")): len(replies),
        ("backorder_telegram_requests_total", ("reply", "sendMessage", "429")): 0,
        ("backorder_telegram_requests_total", ("reply", "sendMessage", "5xx")): 0,
        ("backorder_telegram_requests_total", ("reply", "sendMessage", "403")): 0,
        ("backorder_telegram_requests_total", ("reply", "sendMessage", "timeout")): 0,
        # Chats 0 (after its 429), 4 and 5.
        ("backorder_telegram_requests_total", ("notice", "sendMessage", "ok")): 3,
        ("backorder_telegram_requests_total", ("notice", "sendMessage", "429")): 1,
        ("backorder_telegram_requests_total", ("notice", "sendMessage", "5xx")): 1,
        ("backorder_telegram_requests_total", ("notice", "sendMessage", "403")): 1,
        ("backorder_telegram_requests_total", ("notice", "sendMessage", "timeout")): 1,
    }

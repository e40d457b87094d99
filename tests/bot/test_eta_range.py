"""ETA ranges (#18) through the sandbox: where the supplier's track record has enough history,
the order view and a date-change notice state "expected 20–25 December"; the projected date
stays what the store promises."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy
from sandbox.client import SandboxClient
from store import Store
from store.backorders import change_restock_date
from store.chats import set_chat_language
from store.insights import refresh_records
from store.schema import order_lines, orders
from tests.bot.notice_helpers import RESTOCK, SKU, day, seed
from tests.conftest import NO_CHAT_PACE, TODAY, link_customer
from tests.store.test_insights import delivered

QUIET = 0.15
JOHN = 2  # demo customer: order 100005, one coffee machine waiting for PO-000001 (SUP-01)


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {"NOTICE_JOB_INTERVAL_SECONDS": "0"}


async def late_history(store: Store, supplier: str, sku: str, slips: list[int]) -> None:
    """Past deliveries of ``supplier``, each ``slip`` days after its first date."""
    async with store.begin() as conn:
        for i, slip in enumerate(slips):
            first = TODAY - timedelta(days=100 + 10 * i)
            await delivered(
                conn, f"H-{supplier}-{i}", supplier, sku, first, first + timedelta(slip)
            )


ORDER_VIEW = {
    "en": "⏳ 1 waiting: expected December 20\u2009–\u200924 (in 3 weeks). The later day allows"
    " for this supplier's usual delays.",
    "de": "⏳ 1 wartet: erwartet 20.–24. Dezember (in 3 Wochen). Der spätere Tag rechnet"
    " mit den üblichen Verzögerungen dieses Lieferanten.",
    "es": "⏳ 1 pendiente: llega entre el 20–24 de diciembre (dentro de 3 semanas). El"
    " último día cuenta con los retrasos habituales de este proveedor.",
    "ru": "⏳ 1 шт. ожидается: поступление 20—24 декабря (через 3 недели). Поздняя дата"
    " учитывает обычные задержки этого поставщика.",
}
SINGLE = {
    "en": "⏳ 1 waiting: ships around December 20 (in 3 weeks).",
    "de": "⏳ 1 wartet: Versand um den 20. Dezember (in 3 Wochen).",
    "es": "⏳ 1 pendiente: se envía hacia el 20 de diciembre (dentro de 3 semanas).",
    "ru": "⏳ 1 шт. ожидается: отправка около 20 декабря (через 3 недели).",
}


async def test_the_order_view_states_the_range_the_record_supports(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    chat = 7100 + JOHN
    await link_customer(tg, store, chat, JOHN, "en")
    await tg.say(chat, "/orders 100005", quiet=QUIET)  # the moved date's news, told once

    async def views() -> dict[str, str]:
        seen = {}
        for language in ORDER_VIEW:
            async with store.begin() as conn:
                await set_chat_language(conn, chat, language)
            [reply] = await tg.say(chat, "/orders 100005", quiet=QUIET)
            seen[language] = reply["text"]
        return seen

    # The demo's SUP-01 is punctual (p80 0 days): a single date, as before.
    await refresh_records(store, min_deliveries=5)
    before = await views()
    for language, text in before.items():
        assert SINGLE[language] in text
    # 30 more deliveries, each 4 days late, make its p80 slip 4 days (of 50 deliveries).
    await late_history(store, "SUP-01", "COF-0001", [4] * 30)
    await refresh_records(store, min_deliveries=5)
    after = await views()
    for language, text in after.items():
        assert text == before[language].replace(SINGLE[language], ORDER_VIEW[language])
    # The store's date is still the single projected one.
    async with store.connect() as conn:
        projected = await conn.scalar(
            select(order_lines.c.projected_date)
            .join(orders, orders.c.order_id == order_lines.c.order_id)
            .where(orders.c.order_number == "100005")
        )
    assert projected == day(24)


NOTICE = {
    "en": "📦 Order {number}\n\nDesk Lamp\n"
    "📅 Now expected December 20\u2009–\u200925 (in 3 weeks), 14 days later than the December 6"
    " we gave you. The later day allows for this supplier's usual delays.\n\n"
    "Sorry for the wait.",
    "de": "📦 Bestellung {number}\n\nSchreibtischlampe\n"
    "📅 Jetzt erwartet 20.–25. Dezember (in 3 Wochen), 14 Tage später als der genannte"
    " 6. Dezember. Der spätere Tag rechnet mit den üblichen Verzögerungen dieses Lieferanten."
    "\n\nEntschuldigen Sie die Wartezeit.",
    "es": "📦 Pedido {number}\n\nLámpara de escritorio\n"
    "📅 Ahora llega entre el 20–25 de diciembre (dentro de 3 semanas), 14 días más tarde"
    " que el 6 de diciembre que te dimos. El último día cuenta con los retrasos habituales de"
    " este proveedor.\n\nPerdona la espera.",
    "ru": "📦 Заказ {number}\n\nНастольная лампа\n"
    "📅 Теперь поступление 20—25 декабря (через 3 недели), на 14 дней позже названной"
    " даты 6 декабря. Поздняя дата учитывает обычные задержки этого поставщика.\n\n"
    "Извините за ожидание.",
}


async def test_a_date_change_notice_states_the_range_in_four_languages(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    languages = ("en", "de", "es", "ru")
    made = await seed(store, tg, 4, languages=languages)
    # Six deliveries of the lamp supplier: slips 0 2 3 5 5 6, p80 = the 5th = 5 days.
    await late_history(store, "SUP-LMP", SKU, [0, 2, 3, 5, 5, 6])
    await refresh_records(store, min_deliveries=5)
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert (report.claimed, report.sent) == (4, 4)
    for (_, chat, number), language in zip(made, languages, strict=True):
        [message] = await tg.transcript(chat)
        assert message["text"] == NOTICE[language].format(number=number)
    # What the customers were told is the projected date, as the delay policy reads it.
    async with store.connect() as conn:
        told = (
            await conn.execute(
                select(order_lines.c.projected_date, order_lines.c.last_told_date).where(
                    order_lines.c.sku == SKU
                )
            )
        ).all()
    assert [tuple(r) for r in told] == [(day(24), day(24))] * 4

"""The daily digest (#18) through the sandbox: the day's figures in the ops topic and a chart
of waiting lines by cause over 30 days, sent as a photo; once a day."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import timedelta
from typing import Any

from matplotlib.image import imread
from sqlalchemy import insert, select

from bot.context import BotApplication
from bot.ops import ops_thread
from bot.ops.digest import chart_png, send_digest
from sandbox.client import SandboxClient
from store import Store
from store.insights import CAUSES, cause_history
from store.schema import cause_snapshots, delay_offers, order_lines, orders, outbox
from tests.bot.test_alerts import SUPPORT, bot_environ, support  # noqa: F401  (fixtures)
from tests.conftest import TODAY, Clock

JOHN = 2


async def a_day_of_activity(store: Store, clock: Clock) -> None:
    """Two notices sent and three answers to delay offers in the last 24 hours, one of each
    older; 29 earlier days of snapshots for the chart."""
    now = clock.now
    async with store.begin() as conn:
        line_id, order_id = (
            await conn.execute(
                select(order_lines.c.line_id, orders.c.order_id)
                .join(orders, orders.c.order_id == order_lines.c.order_id)
                .where(orders.c.order_number == "100005")
            )
        ).one()
        for i, hours in enumerate([1, 5, 30]):
            await conn.execute(
                insert(outbox).values(
                    dedupe_key=f"digest-test-{i}", chat_id=702, customer_id=JOHN,
                    kind="order_update", payload=json.dumps({}), status="sent",
                    not_before=now, sent_at=now - timedelta(hours=hours), created_at=now,
                )
            )  # fmt: skip
        for seq, (status, answer, hours) in enumerate(
            [
                ("consented", "keep", 2),
                ("cancelled", "cancel", 3),
                ("cancelled", "alternative", 4),
                ("cancelled", "cancel", 48),
            ],
            start=1,
        ):
            await conn.execute(
                insert(delay_offers).values(
                    line_id=line_id, order_id=order_id, customer_id=JOHN, seq=seq,
                    promised_date=TODAY, consent_needed=True, buttons="[]", status=status,
                    offered_at=now - timedelta(days=3), answer=answer,
                    answered_at=now - timedelta(hours=hours),
                )
            )  # fmt: skip
        for back in range(1, 30):
            await conn.execute(
                insert(cause_snapshots),
                [
                    dict(day=TODAY - timedelta(days=back), cause=c, lines=100 + back * k, units=0)
                    for k, c in enumerate(CAUSES)
                ],
            )


DIGEST = (
    "📊 Daily digest · November 26, 2026\n"
    "\n"
    "2,563 lines waiting, by cause:\n"
    "• no restock planned: 165\n"
    "• supplier slip: 378\n"
    "• demand ahead exceeds incoming: 1,197\n"
    "• restock on schedule: 823\n"
    "🔔 0 alerts active.\n"
    "\n"
    "Most customers waiting\n"
    "1. BIK-0025 Bravo 103 Bike: 163 customers, 257 units\n"
    "2. BLN-0015 Solara 558 Blender: 146 customers, 271 units\n"
    "3. COF-0010 Vento 434 Coffee Machine: 125 customers, 212 units\n"
    "4. BLN-0004 Milano 495 Blender: 113 customers, 195 units\n"
    "5. BIK-0024 Vento 670 Bike: 108 customers, 180 units\n"
    "\n"
    # The demo's habits (store.demo.HABITS): the slowest five by their p80 slip.
    "Suppliers by slip (4 in 5 deliveries come within the first figure)\n"
    "SUP-11: 16 days, on time 79% of 14, worst 20 days\n"
    "SUP-04: 15 days, on time 29% of 17, worst 18 days\n"
    "SUP-05: 9 days, on time 73% of 11, worst 13 days\n"
    "SUP-03: 7 days, on time 33% of 15, worst 9 days\n"
    "SUP-10: 7 days, on time 60% of 15, worst 13 days\n"
    "\n"
    "Last 24 hours\n"
    "Notices sent: 2\n"
    "Customers' choices: kept waiting 1 · cancelled 1 · chose an alternative 1"
)


async def test_the_digest_in_the_ops_topic_with_its_chart_once(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    thread = await ops_thread(bot)
    assert thread is not None
    await a_day_of_activity(store, clock)
    # Three at once (processes, a restart): one sends it.
    sent = await asyncio.gather(*(send_digest(bot) for _ in range(3)))
    assert sorted(sent) == [False, False, True]
    messages: list[dict[str, Any]] = await tg.transcript(SUPPORT, message_thread_id=thread)
    assert [m["kind"] for m in messages] == ["service", "text", "photo"]
    _, text, photo = messages
    assert text["text"] == DIGEST
    assert photo["caption"] == "Waiting lines by cause, last 30 days"
    # The photo is the chart of the 29 earlier days' snapshots and today's.
    async with store.connect() as conn:
        history = await cause_history(conn, TODAY - timedelta(days=29))
    assert len(history) == 30
    png = chart_png(history, TODAY - timedelta(days=29), TODAY, bot.bot_data.renderer, "en")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(io.BytesIO(png)).shape == (450, 800, 4)
    assert photo["message"]["photo"][-1]["file_size"] == len(png)
    [call] = await tg.calls("sendPhoto")
    assert (call["status"], call["params"]["message_thread_id"]) == (200, str(thread))
    # Once a day: later calls send nothing.
    assert await send_digest(bot) is False
    assert len(await tg.transcript(SUPPORT, message_thread_id=thread)) == 3


RENDERED = {
    "en": ("🔔 <b>Alerts</b>\n📉 <code>KET-0001</code>: 1,200 free, below its reorder point of 1,500."  # noqa: E501
           "\n⏰ Restock <code>PO-1</code> (SUP-01, <code>KET-0001</code>) slipped again: now due"
           " December 4, moved later 2 times."),
    "de": ("🔔 <b>Warnungen</b>\n📉 <code>KET-0001</code>: 1.200 frei, unter dem Meldebestand von"
           " 1.500.\n⏰ Nachlieferung <code>PO-1</code> (SUP-01, <code>KET-0001</code>) verschiebt"
           " sich erneut: jetzt fällig am 4. Dezember, 2-mal nach hinten verschoben."),
    "es": ("🔔 <b>Alertas</b>\n📉 <code>KET-0001</code>: 1.200 libres, por debajo de su punto de"
           " pedido de 1.500.\n⏰ La reposición <code>PO-1</code> (SUP-01, <code>KET-0001</code>) se"  # noqa: E501
           " retrasa otra vez: ahora para el 4 de diciembre, aplazada 2 veces."),
    "ru": ("🔔 <b>Предупреждения</b>\n📉 <code>KET-0001</code>: свободно 1\xa0200, ниже точки заказа"  # noqa: E501
           " 1\xa0500.\n⏰ Поставка <code>PO-1</code> (SUP-01, <code>KET-0001</code>) снова"
           " сдвинулась: теперь ожидается 4 декабря, переносов на более позднюю дату: 2."),
}  # fmt: skip


def test_the_ops_texts_in_four_languages() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from bot.render import Renderer
    from store.insights import Alert

    renderer = Renderer(ZoneInfo("Europe/Berlin"), lambda: TODAY)
    at = datetime(2026, 11, 26, tzinfo=UTC)
    batch = [
        Alert("reorder:KET-0001", "reorder", True,
              {"sku": "KET-0001", "free": 1200, "point": 1500}, at, None, None),
        Alert("slip_again:PO-1:2", "slip_again", True,
              {"restock_id": "PO-1", "supplier_id": "SUP-01", "sku": "KET-0001",
               "expected": "2026-12-04", "moves": 2}, at, None, None),
    ]  # fmt: skip
    for language, expected in RENDERED.items():
        assert renderer.text("ops_alerts.j2", language, alerts=batch, more=0) == expected
        assert renderer.plain("ops.j2", "topic_name", language) != ""
        title = renderer.plain("ops.j2", "chart_title", language, days=30)
        assert "30" in title and (language == "en") == (title.startswith("Waiting"))

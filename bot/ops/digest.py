"""The daily digest in the ops topic (#18): the figures of the day and one chart, waiting lines
by cause over the last 30 days (from the daily snapshots, store.insights.snapshot_causes)."""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import date, timedelta

import numpy as np
from telegram.error import TelegramError

from bot.context import BotApplication
from bot.ops import ops_thread, refresh
from bot.render import Renderer
from store.insights import (
    CAUSES,
    activity,
    alerts,
    cause_counts,
    cause_history,
    claim_state,
    drop_state,
    stored_records,
    top_waiting_skus,
)

log = logging.getLogger(__name__)

CHART_DAYS = 30
TOP = 5
COLORS = {
    "no_restock": "#9e9e9e",
    "supplier_slip": "#e53935",
    "demand_ahead": "#fb8c00",
    "not_backorderable": "#6d4c41",
    "on_schedule": "#43a047",
}


def chart_png(
    history: dict[date, dict[str, int]],
    first: date,
    last: date,
    renderer: Renderer,
    language: str,
) -> bytes:
    """Waiting lines by cause per day, stacked, as a PNG (matplotlib's Agg: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.subplots()
    ax.stackplot(
        np.array(days, dtype="datetime64[D]"),
        *[[history.get(d, {}).get(cause, 0) for d in days] for cause in CAUSES],
        labels=[renderer.plain("ops.j2", "cause", language, cause=c) for c in CAUSES],
        colors=[COLORS[c] for c in CAUSES],
    )
    ax.set_title(renderer.plain("ops.j2", "chart_title", language, days=CHART_DAYS))
    ax.set_ylabel(renderer.plain("ops.j2", "chart_axis", language))
    ax.legend(loc="upper left", fontsize="small")
    ax.margins(x=0)
    fig.autofmt_xdate()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


async def send_digest(app: BotApplication, day: date | None = None) -> bool:
    """The digest of ``day`` (default: the shop's today), once: False when another process
    (or an earlier call) sent it, or there is no ops topic."""
    settings = app.bot_data.settings
    store = app.bot_data.store
    renderer = app.bot_data.renderer
    chat_id = settings.ops_chat_id
    thread = await ops_thread(app)
    if chat_id is None or thread is None:
        return False
    now = app.bot_data.now()
    day = day or now.astimezone(settings.zone).date()
    name = f"digest:{day.isoformat()}"
    async with store.begin() as conn:
        if not await claim_state(conn, name, now.isoformat(), now):
            return False
    try:
        await refresh(app)
        async with store.connect() as conn:
            counts = await cause_counts(conn)
            active = await alerts(conn, active_only=True, limit=100_000)
            top = await top_waiting_skus(conn, TOP)
            records = await stored_records(conn, "supplier")
            done = await activity(conn, now - timedelta(days=1), now)
            first = day - timedelta(days=CHART_DAYS - 1)
            history = await cause_history(conn, first)
        slowest = sorted(
            (r for r in records if r.enough), key=lambda r: (-r.slip_p80, -r.slip_median, r.key)
        )[:TOP]
        language = settings.default_language
        text = renderer.text(
            "ops_digest.j2",
            language,
            day=day,
            counts=counts,
            waiting=sum(c.lines for c in counts),
            alerts=len(active),
            top=top,
            suppliers=slowest,
            activity=done,
        )
        png = await asyncio.to_thread(chart_png, history, first, day, renderer, language)
        await app.bot.send_message(chat_id, text, message_thread_id=thread)
        caption = renderer.plain("ops.j2", "chart_title", language, days=CHART_DAYS)
        await app.bot.send_photo(chat_id, png, caption=caption, message_thread_id=thread)
    except (TelegramError, OSError) as exc:
        log.warning("the digest of %s was not sent: %s", day, exc)
        async with store.begin() as conn:
            await drop_state(conn, name)
        return False
    return True

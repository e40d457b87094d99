"""Long delays under the US FTC Mail, Internet, or Telephone Order Merchandise Rule
(16 CFR Part 435): the delay-option offer, consent, and cancellation when consent is missing.

A line is delayed when it cannot ship by the date promised at order time (or, with no
promise, within ``default_ship_days`` of the order). The first definite delay of up to
``silent_consent_days`` needs no answer: silence is consent. A longer or unknown delay, and
every further delay, needs the customer's explicit "keep waiting" by the answer-by day; without
it the line is cancelled (or handed to the agents, by policy). Every offer and answer is a
row of ``delay_offers``.

The policy costs what changed (issue #14): a change marks the lines it touched
(store.marks), and ``run_delay_policy`` works from the marks, the offers due and the first
pass's cursor in batches sized by time (store.marks.run_sized_batches), each its own transaction,
safe with any number of processes at once. ``apply_delay_policy`` is the same policy from
scratch over every line in one transaction: what the batches must end with
(tests/store/test_policy_machine.py). Offers are made in SQL, a batch's lines at once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    String,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    null,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import cancel_line, cancel_lines, cancel_order, projection_batch
from store.counters import next_value
from store.db import Store
from store.errors import NotFound
from store.marks import (
    DELAY,
    NOTICE,
    advance,
    built_once,
    filter_only,
    id_list,
    in_list,
    insert_ignoring,
    mark_lines,
    run_sized_batches,
    take_marks,
    take_turn,
    unmark_lines,
    unmark_orders,
)
from store.outbox import (
    DELAY_CANCELLED,
    DELAY_OFFER,
    IN_CHUNK,
    insert_notices,
    line_span,
    queue_notices,
)
from store.schema import (
    UTCDateTime,
    chats,
    delay_offers,
    follow_on_marks,
    order_lines,
    orders,
    outbox,
    sku_projections,
    utcnow,
)

OPEN = ("open", "consented")
# Lines per batch of the policy: the least of the batches sized by time (store.marks.
# run_sized_batches). Set-based, 250 lines of the 1M-order store's first pass cost ~5 ms of CPU.
BATCH = 250
# Lines written per batch of run_follow_on, the least of its batches sized by time: a line
# written there costs its projection, policy and notice, 100-150 us of CPU on the 1M-order
# store, and a loaded machine stretches a batch 2-4 times (200 lines: waits of 0.6 s).
FOLLOW_BATCH = 100
# Lines walked per line written at most, in a batch of run_follow_on: the batches are sized by
# the lines written, and a batch that walked thousands of lines that stayed put before it met
# the lines that move (one of 3,415 lines took 410 ms) must not grow its size from that pace.
# Each line walked is read: 8 read 1,600 lines for 200 written, 15-20% more CPU.
WALK_PER_WRITTEN = 2
# Lines walked at least, whatever a batch may write: a line that stays put is only read
# (~7 us), and the queues a deadline day's cancellations changed are mostly such lines
# (855,533 walked, 713 moved): at twice the least lines written, 4,278 batches of 200 lines
# spent 22 s on their commits and turns.
WALK_LEAST = 2000
# What a due offer counts against a batch's limit, in lines: it is decided in Python, where
# lines are offered in a few statements for the whole batch. Its writes are the batch's (one
# statement per outcome; the cancellations' lines together, store.backorders.cancel_lines):
# on the 1M-order store a cancellation costs ~0.1 ms, an offer sent to agents ~0.01 ms, a
# line offered ~0.02 ms. At 20 (one statement or more per offer, before), the bot's tick
# (batches of 50 lines) decided 2 offers a batch: 1.26M due the same day took it 45 minutes
# of batches back to back, every change's notices waiting behind them.
DUE_WEIGHT = 5


@dataclass(frozen=True)
class DelayPolicy:
    silent_consent_days: int = 30
    default_ship_days: int = 30
    min_answer_days: int = 7
    no_answer_action: Literal["cancel", "agents"] = "cancel"


@dataclass(frozen=True)
class DelayRun:
    offered: int
    cancelled: int
    to_agents: int
    closed: int
    lines: int = 0  # lines looked at (marked or scanned)
    batches: int = 0
    more: bool = False  # the last batch used its whole budget: there may be work left

    def __add__(self, other: DelayRun) -> DelayRun:
        return DelayRun(
            self.offered + other.offered,
            self.cancelled + other.cancelled,
            self.to_agents + other.to_agents,
            self.closed + other.closed,
            self.lines + other.lines,
            self.batches + other.batches,
            other.more,
        )


@dataclass(frozen=True)
class Offer:
    offer_id: int
    line_id: int
    order_id: int
    order_number: str
    customer_id: int
    seq: int
    line_no: int
    sku: str
    qty_waiting: int
    unit_price_minor: int
    currency: str
    promised_date: date
    revised_date: date | None
    projected_date: date | None
    consent_needed: bool
    answer_by: date | None
    status: str
    answer: str | None
    latest: bool  # no newer offer for the line
    open_lines_in_order: int  # lines of the order still waiting or ready


def promise_of(promised: date | None, placed_at: datetime, default_ship_days: int) -> date:
    return promised or (placed_at.date() + timedelta(days=default_ship_days))


def is_delayed(projected: date | None, promise: date) -> bool:
    return projected is None or projected > promise


async def apply_delay_policy(
    conn: AsyncConnection,
    *,
    today: date,
    now: datetime | None = None,
    policy: DelayPolicy,
    batch_size: int = 5000,
) -> DelayRun:
    """The policy from scratch, in the caller's one transaction: every offer due, then every
    line of the store, marked or not. For a small store, a test, a change written around the
    store's functions (no marks), and as the reference the batched pass must equal. A big
    store's scheduler and admin commands run ``run_delay_policy``: work from the marks, each
    batch its own transaction. Idempotent for the same day."""
    now = now or utcnow()
    await take_turn(conn)
    cancelled, to_agents, closed, _ = await _enforce_deadlines(conn, today, now, policy, None)
    offered = lines = batches = 0
    start = 0
    while (span := await line_span(conn, start, batch_size))[0]:
        count, last = span
        lines += count
        batches += 1
        offered += await _offer_lines(conn, today, now, policy, _between(start, last))
        start = last + 1
    # Every line so far was looked at: the first pass has nothing left. The marks stay; a
    # batch that takes them finds nothing to do.
    await advance(conn, start)
    return DelayRun(offered, cancelled, to_agents, closed, lines, batches, False)


async def run_delay_policy(
    store: Store,
    *,
    today: date,
    now: datetime | None = None,
    policy: DelayPolicy,
    batch_size: int | None = None,
    max_batches: int | None = None,
    on_batch: Callable[[DelayRun], None] | None = None,
) -> DelayRun:
    """The policy in batches, each in its own short transaction, until nothing is pending
    (or ``max_batches``). A crash between two batches loses nothing: what is left is still
    marked, or beyond the cursor, or still due. ``batch_size``: lines (or offers due) per
    batch; None: sized by time (store.marks.run_sized_batches)."""
    return await run_sized_batches(
        store,
        lambda conn, limit: delay_policy_batch(
            conn, today=today, now=now, policy=policy, limit=limit
        ),
        DelayRun(0, 0, 0, 0),
        least=BATCH,
        size=batch_size,
        max_batches=max_batches,
        on_batch=on_batch,
    )


async def delay_policy_batch(
    conn: AsyncConnection,
    *,
    today: date,
    now: datetime | None = None,
    policy: DelayPolicy,
    limit: int = BATCH,
) -> DelayRun:
    """One bounded step of the policy, at most ``limit`` offers due or lines looked at, in the
    caller's transaction: close offers whose answer-by day passed without consent (oldest
    offer first), then offer the options to the marked lines newly delayed or delayed again,
    then to the lines the first pass has not looked at yet (line_id ranges from the cursor).

    Deadlines come first and marks only once none is due, the order of a pass over the whole
    store; the results of the batches until ``more`` is False are those of that pass. Safe
    with any number of processes at once: the batch's first statement is a write (store.marks.
    take_turn), offers are inserted with ON CONFLICT DO NOTHING and only those inserted are
    told."""
    now = now or utcnow()
    start = await take_turn(conn)
    budget = limit
    most_due = max(1, limit // DUE_WEIGHT)
    cancelled, to_agents, closed, due = await _enforce_deadlines(conn, today, now, policy, most_due)
    # More may be due: the marks wait for a batch that finds none.
    budget = 0 if due >= most_due else budget - due * DUE_WEIGHT
    offered = lines = 0
    if budget > 0:
        marked = await take_marks(conn, budget)
        budget -= len(marked)
        lines += len(marked)
        for at in range(0, len(marked), IN_CHUNK):
            chunk = marked[at : at + IN_CHUNK]
            offered += await _offer_lines(conn, today, now, policy, _one_of(chunk))
    if budget > 0:
        count, last = await line_span(conn, start, budget)
        if count:
            budget -= count
            lines += count
            offered += await _offer_lines(conn, today, now, policy, _between(start, last))
            await advance(conn, last + 1)
    return DelayRun(offered, cancelled, to_agents, closed, lines, 1, budget <= 0)


@dataclass(frozen=True)
class FollowRun:
    """What ``run_follow_on``'s batches did: the projection's walks, and the policy and the
    notices of the lines they wrote (``followed``; the rest were marked for the stages' own
    batches)."""

    lines: int  # waiting lines walked
    moved: int  # of them, lines whose date moved
    followed: int = 0  # lines written whose policy and notices ran in the walk's batch
    offered: int = 0
    notices: int = 0
    batches: int = 0
    more: bool = False
    # Of a batch's limit, what it used: the lines it wrote (store.marks.run_sized_batches
    # sizes the next batch by them); not summed.
    used: int = 0

    def __add__(self, other: FollowRun) -> FollowRun:
        return FollowRun(
            self.lines + other.lines,
            self.moved + other.moved,
            self.followed + other.followed,
            self.offered + other.offered,
            self.notices + other.notices,
            self.batches + other.batches,
            other.more,
        )


async def run_follow_on(
    store: Store,
    *,
    today: date,
    now: datetime | None = None,
    policy: DelayPolicy,
    threshold_days: int = 1,
    batch_size: int | None = None,
    max_batches: int | None = None,
    on_batch: Callable[[FollowRun], None] | None = None,
) -> FollowRun:
    """The projections the changes owe (store.backorders.run_projection) with their
    follow-on work in the same batches (``follow_on_batch``), each batch its own short
    transaction sized by time (or ``batch_size`` lines), until no walk is pending (or
    ``max_batches``). What could not be done in a walk's batch is marked, for
    ``run_delay_policy`` and then ``store.outbox.run_notices``, which run after it."""
    now = now or utcnow()
    return await run_sized_batches(
        store,
        lambda conn, limit: follow_on_batch(
            conn,
            today=today,
            now=now,
            policy=policy,
            threshold_days=threshold_days,
            limit=limit,
        ),
        FollowRun(0, 0),
        least=FOLLOW_BATCH,
        size=batch_size,
        max_batches=max_batches,
        on_batch=on_batch,
    )


async def follow_on_batch(
    conn: AsyncConnection,
    *,
    today: date,
    now: datetime | None = None,
    policy: DelayPolicy,
    threshold_days: int = 1,
    limit: int = FOLLOW_BATCH,
) -> FollowRun:
    """One batch of a projection's walk (store.backorders.projection_batch) that does the
    follow-on work of the lines it writes itself, in the caller's transaction, instead of
    marking them for the policy's and the notices' batches (a mark written, read back and
    deleted twice per line, and three transactions where one does):

    - the delay policy for every line written (``_offer_lines``, as a batch taking their
      marks would), their delay marks of earlier changes taken too;
    - the notices for their orders, whole (store.outbox.queue_notices), as the notice
      batches would queue them: only orders the policy and the projection are done with. An
      order with another line still marked for the policy, or waiting in a queue whose walk
      has not reached it yet, is left to the notice batches: the line is marked for them.

    Only when no offer is due (deadlines come first, the order of the pass from scratch);
    otherwise the lines are marked, as a plain projection batch does. A line the notices'
    first pass has not reached yet is told now, and found told (or its notice queued under
    the same key) when the pass gets there.

    The stages' cursor rows are written first, before the SKU's row and any line (on
    PostgreSQL, the order of the policy's own batches, which may cancel lines and so ask for
    a projection): the batches of every process and stage take turns."""
    now = now or utcnow()
    policy_below = await take_turn(conn, DELAY)
    await take_turn(conn, NOTICE)
    # ``limit`` counts the lines written, whose follow-on is the batch's cost; a line walked
    # and found right costs little (a queue's head often holds thousands of them).
    walked = await projection_batch(
        conn, limit=max(limit * WALK_PER_WRITTEN, WALK_LEAST), mark=False, most_written=limit
    )
    ids = list(walked.written)
    run = FollowRun(walked.lines, walked.moved, 0, 0, 0, walked.batches, walked.more, used=len(ids))
    if not ids:
        return run
    due = await conn.scalar(_ANY_DUE, {"today": today})
    if due is not None:
        await mark_lines(conn, ids)
        return run
    offered = 0
    order_of: dict[int, int] = {}
    unheard: set[int] = set()  # orders of customers without a chat
    for at in range(0, len(ids), IN_CHUNK):
        part = ids[at : at + IN_CHUNK]
        await unmark_lines(conn, part, DELAY)
        offered += await _offer_lines(conn, today, now, policy, _one_of(part))
        heard = built_once(("heard", conn.dialect.name), lambda: _heard_statement(conn))
        for line_id, order_id, chat_id in (await conn.execute(heard, {"h_ids": part})).all():
            order_of[int(line_id)] = int(order_id)
            if chat_id is None:
                unheard.add(int(order_id))
    # Nobody to tell: no notice is queued for a customer without a chat (store.outbox), so
    # their orders need no look of the notices', now or later (a link marks every line of its
    # customer). Their notice marks go, unless a chat was linked meanwhile (asked again in
    # the statement).
    unheard_ids = sorted(unheard)
    for at in range(0, len(unheard_ids), IN_CHUNK):
        unheard_part = unheard_ids[at : at + IN_CHUNK]
        unheard_marks = built_once(
            ("unheard marks", conn.dialect.name), lambda: _unheard_marks_statement(conn)
        )
        await conn.execute(unheard_marks, {"h_ids": unheard_part})
    orders_in = sorted(set(order_of.values()) - unheard)
    held: set[int] = set()
    for at in range(0, len(orders_in), IN_CHUNK):
        held.update(await _orders_held(conn, orders_in[at : at + IN_CHUNK], policy_below))
    if held:
        await mark_lines(conn, [i for i in ids if order_of[i] in held], (NOTICE,))
    ready = [o for o in orders_in if o not in held]
    notices = 0
    for at in range(0, len(ready), IN_CHUNK):
        part = ready[at : at + IN_CHUNK]
        # Every notice mark of these orders goes: their lines are all looked at below.
        await unmark_orders(conn, part, NOTICE)
        report = await queue_notices(
            conn, threshold_days=threshold_days, now=now, order_ids=part, back_in_stock=False
        )
        notices += report.notices
    return FollowRun(
        walked.lines,
        walked.moved,
        len(ids),
        offered,
        notices,
        walked.batches,
        walked.more,
        used=len(ids),
    )


_ANY_DUE = (
    select(delay_offers.c.offer_id)
    .where(
        delay_offers.c.status == "open",
        delay_offers.c.consent_needed.is_(True),
        delay_offers.c.answer_by < bindparam("today", type_=Date),
    )
    .limit(1)
)


def _heard_statement(conn: AsyncConnection) -> Any:
    """Lines ``h_ids`` with their order and their customer's chat (None: no chat)."""
    ol = order_lines.c
    return (
        select(ol.line_id, ol.order_id, chats.c.chat_id)
        .select_from(
            order_lines.join(orders, orders.c.order_id == ol.order_id).outerjoin(
                chats, chats.c.customer_id == orders.c.customer_id
            )
        )
        .where(in_list(conn.dialect.name, ol.line_id, id_list("h_ids")))
    )


def _unheard_marks_statement(conn: AsyncConnection) -> Any:
    """The notice marks of the orders ``h_ids`` whose customer has no chat (asked in the
    statement: a chat linked meanwhile keeps them)."""
    ol = order_lines.c
    m = follow_on_marks.c
    return delete(follow_on_marks).where(
        m.stage == NOTICE,
        m.line_id.in_(
            select(ol.line_id)
            .select_from(order_lines.join(orders, orders.c.order_id == ol.order_id))
            .where(
                in_list(conn.dialect.name, ol.order_id, id_list("h_ids")),
                ~select(chats.c.chat_id)
                .where(chats.c.customer_id == orders.c.customer_id)
                .exists(),
            )
        ),
    )


async def _orders_held(conn: AsyncConnection, order_ids: list[int], policy_below: int) -> list[int]:
    """Of ``order_ids``, the orders a notice must wait for: a line the delay policy still owes
    a look (marked for it, or at or past its first pass's cursor, ``policy_below``), or a
    waiting line a projection's walk has not reached yet (its SKU's walk pending, the line
    past its cursor), whose date may still move."""
    held = built_once(("held", conn.dialect.name), lambda: _held_statement(conn))
    rows = await conn.scalars(held, {"h_ids": order_ids, "h_below": policy_below})
    return [int(i) for i in rows]


def _held_statement(conn: AsyncConnection) -> Any:
    mine = order_lines.alias("mine")
    owed = follow_on_marks.alias("owed")
    p = sku_projections.c
    unwalked = (
        select(p.sku)
        .where(
            p.sku == mine.c.sku,
            p.pending.is_(True),
            or_(
                p.after_line.is_(None),
                tuple_(mine.c.queue_rank, mine.c.queued_at, mine.c.line_id)
                > tuple_(p.after_rank, p.after_at, p.after_line),
            ),
        )
        .exists()
    )
    marked = (
        select(owed.c.line_id)
        .where(owed.c.stage == DELAY, owed.c.line_id == mine.c.line_id)
        .exists()
    )
    return (
        select(mine.c.order_id)
        .where(
            in_list(conn.dialect.name, mine.c.order_id, id_list("h_ids")),
            or_(
                mine.c.line_id >= bindparam("h_below", type_=mine.c.line_id.type),
                marked,
                (mine.c.qty_waiting > 0) & unwalked,
            ),
        )
        .distinct()
    )


@dataclass(frozen=True)
class _Lines:
    """Which rows a policy statement is about: ids in a list, or a range of ids. Bound as
    parameters of a statement built once (see store.marks.built_once), not built into it."""

    kind: Literal["ids", "range"]
    values: dict[str, Any]

    def where(self, dialect: str, column: ColumnElement[int]) -> ColumnElement[bool]:
        if self.kind == "ids":
            return in_list(dialect, column, id_list("w_ids"))
        return column.between(bindparam("w_lo"), bindparam("w_hi"))


def _one_of(ids: list[int]) -> _Lines:
    return _Lines("ids", {"w_ids": ids})


def _between(first: int, last: int) -> _Lines:
    return _Lines("range", {"w_lo": first, "w_hi": last})


async def _offer_lines(
    conn: AsyncConnection,
    today: date,
    now: datetime,
    policy: DelayPolicy,
    which: _Lines,
) -> int:
    """Offer the options to the lines ``which`` selects that are delayed and owed an offer.
    In SQL: one INSERT ... SELECT works out every offer (seq, consent, answer-by day), then
    one statement each supersedes the open offers they replace, queues their notices and
    marks their lines told. Python sees only the new offers' ids: building the offers row by
    row cost more in SQLAlchemy's parameter processing alone than SQLite's whole work."""
    dialect = conn.dialect.name
    insert_offers = built_once(
        ("offer", dialect, policy, which.kind),
        lambda: _offers_insert(conn, policy, which),
    )
    # Another process may have made the same offer (line_id, seq): its row is skipped and
    # RETURNING leaves it out, so only the offers made here are superseded, told and marked
    # told.
    made = sorted(
        (
            await conn.execute(
                insert_offers,
                {
                    **which.values,
                    "w_now": now,
                    "w_floor": today + timedelta(days=policy.min_answer_days),
                },
            )
        ).scalars()
    )
    if not made:
        return 0
    if made[-1] - made[0] + 1 == len(made):
        # As many ids in their range as offers made: the range holds exactly them (the usual
        # case, one statement's ids under the batch's claim).
        await _tell_offers(conn, now, _between(made[0], made[-1]))
    else:
        for at in range(0, len(made), IN_CHUNK):
            await _tell_offers(conn, now, _one_of(made[at : at + IN_CHUNK]))
    return len(made)


def _offers_insert(conn: AsyncConnection, policy: DelayPolicy, which: _Lines) -> Any:
    ol = order_lines.c
    d = delay_offers.c
    latest = delay_offers.alias("latest")
    newer = delay_offers.alias("newer")
    # The line's newest offer through the (line_id, seq) unique index, line by line: a
    # GROUP BY over every offer of the store cost a scan of the table per batch.
    newest_seq = (
        select(func.max(newer.c.seq))
        .where(newer.c.line_id == ol.line_id)
        .correlate(order_lines)
        .scalar_subquery()
    )
    dialect = conn.dialect.name
    lite = dialect == "sqlite"
    # promise_of, is_delayed and the rules below, in SQL.
    promise = func.coalesce(
        ol.promised_date, _plus_days(lite, orders.c.placed_at, policy.default_ship_days)
    )
    consent_needed = or_(
        latest.c.offer_id.is_not(None),
        ol.projected_date.is_(None),
        ol.projected_date > _plus_days(lite, promise, policy.silent_consent_days),
    )
    floor = bindparam("w_floor", type_=Date)
    answer_by = case(
        (
            consent_needed,
            (func.max if lite else func.greatest)(
                func.coalesce(ol.projected_date, promise), floor, type_=Date
            ),
        ),
        else_=null(),
    )
    offers = (
        select(
            ol.line_id,
            ol.order_id,
            orders.c.customer_id,
            func.coalesce(latest.c.seq, 0) + 1,
            promise,
            ol.projected_date,
            consent_needed,
            answer_by,
            literal("[]"),
            bindparam("w_now", type_=UTCDateTime()),
            literal("open"),
        )
        .select_from(
            order_lines.join(orders, orders.c.order_id == ol.order_id).outerjoin(
                latest,
                # which on the offers too: PostgreSQL, whose statistics were taken when the
                # table was small, otherwise read every offer of the store for each batch.
                (latest.c.line_id == ol.line_id)
                & which.where(dialect, latest.c.line_id)
                & (latest.c.seq == newest_seq),
            )
        )
        .where(which.where(dialect, ol.line_id), ol.qty_waiting > 0)
        .where(ol.projected_date.is_(None) | (ol.projected_date > promise))  # delayed
        # Never offered yet, or delayed past the date of an offer still standing (open or
        # consented). Cancelled, with the agents, or consent with no date: no new offer.
        .where(
            latest.c.offer_id.is_(None)
            | (
                latest.c.status.in_(OPEN)
                & latest.c.revised_date.is_not(None)
                & (ol.projected_date.is_(None) | (ol.projected_date > latest.c.revised_date))
            )
        )
        .order_by(ol.line_id)
    )
    return (
        insert_ignoring(conn, delay_offers)
        .from_select(
            [
                "line_id",
                "order_id",
                "customer_id",
                "seq",
                "promised_date",
                "revised_date",
                "consent_needed",
                "answer_by",
                "buttons",
                "offered_at",
                "status",
            ],
            offers,
        )
        .returning(d.offer_id)
    )


def _plus_days(lite: bool, day: Any, days: int) -> ColumnElement[date]:
    """``day`` (a date, or a naive UTC timestamp's day) plus ``days``, in SQL."""
    if lite:
        # Dates are ISO text, which compares as dates; date() takes a timestamp's text too.
        return func.date(day, f"{days:+d} days", type_=Date)
    return type_coerce(cast(day, Date) + literal(days, Integer), Date)


async def _tell_offers(conn: AsyncConnection, now: datetime, made: _Lines) -> None:
    """For the new offers ``made`` selects: supersede the open offer each one replaces (the
    line's previous seq), queue a notice of each to a customer with a chat, and mark their
    lines told. A customer without a chat is told nothing (the outbox's rule), and no row is
    stored for them: the offer itself is the record, and one never shown goes to the agents
    by its answer-by day (_enforce_deadlines)."""
    supersede, notify, told = built_once(
        ("tell", conn.dialect.name, made.kind), lambda: _tell_statements(conn, made)
    )
    params = {**made.values, "w_now": now}
    await conn.execute(supersede, made.values)
    await conn.execute(notify, {**params, "w_created": utcnow()})
    await conn.execute(told, params)


def _tell_statements(conn: AsyncConnection, made: _Lines) -> tuple[Any, Any, Any]:
    d = delay_offers.c
    ol = order_lines.c
    dialect = conn.dialect.name
    new = delay_offers.alias("new")
    prev = delay_offers.alias("prev")
    # Found through the new offers (primary key, then (line_id, seq)). A plain status =
    # 'open' had SQLite scan every open offer of the store through the (status, answer_by)
    # index, in every batch; wrapped (status is never NULL) the index is no candidate.
    supersede = (
        update(delay_offers)
        .where(
            d.offer_id.in_(
                select(prev.c.offer_id)
                .select_from(
                    new.join(
                        prev, (prev.c.line_id == new.c.line_id) & (prev.c.seq == new.c.seq - 1)
                    )
                )
                .where(
                    made.where(dialect, new.c.offer_id),
                    new.c.seq > 1,
                    func.coalesce(prev.c.status, "") == "open",
                )
            ),
        )
        .values(status="superseded")
    )
    offer_id = cast(d.offer_id, String)
    notify = insert_ignoring(conn, outbox).from_select(
        [
            "dedupe_key",
            "chat_id",
            "customer_id",
            "kind",
            "payload",
            "status",
            "attempts",
            "not_before",
            "created_at",
        ],
        select(
            literal("delay:") + offer_id,
            chats.c.chat_id,
            d.customer_id,
            literal(DELAY_OFFER),
            literal('{"offer_id":') + offer_id + literal("}"),
            literal("pending"),
            literal(0),
            bindparam("w_now", type_=UTCDateTime()),
            bindparam("w_created", type_=UTCDateTime()),
        )
        .select_from(delay_offers.join(chats, chats.c.customer_id == d.customer_id))
        .where(made.where(dialect, d.offer_id))
        .order_by(d.offer_id),
    )
    # The offer tells the new date; a plain date-change notice about it would repeat it. A
    # customer without a chat is told nothing yet: their lines stay untold, so the order
    # view shows the move and they hear of it once they link a chat.
    told = (
        update(order_lines)
        .where(
            ol.line_id.in_(
                select(d.line_id)
                .select_from(delay_offers.join(chats, chats.c.customer_id == d.customer_id))
                .where(made.where(dialect, d.offer_id))
            )
        )
        .values(last_told_date=ol.projected_date, last_told_at=bindparam("w_now"))
    )
    return supersede, notify, told


async def _enforce_deadlines(
    conn: AsyncConnection, today: date, now: datetime, policy: DelayPolicy, limit: int | None
) -> tuple[int, int, int, int]:
    """Offers whose answer-by day passed, up to ``limit`` (None: all), in the order of the
    day, then of the offer (a cancellation passes its units on, which can decide the next
    one): (cancelled, to agents, closed, due offers looked at). Offers closed without a
    cancellation are written together, one statement per outcome."""
    d = delay_offers.c
    ol = order_lines.c
    due = (
        await conn.execute(
            select(
                d.offer_id,
                d.line_id,
                d.customer_id,
                ol.line_no,
                ol.qty_waiting,
                ol.projected_date,
                d.promised_date,
                orders.c.order_number,
                chats.c.chat_id,
                d.shown_at,
            )
            .select_from(
                delay_offers.join(order_lines, ol.line_id == d.line_id)
                .join(orders, orders.c.order_id == d.order_id)
                .outerjoin(chats, chats.c.customer_id == d.customer_id)
            )
            .where(d.status == "open", d.consent_needed.is_(True), d.answer_by < today)
            # The index's order: ordered by the offer alone, every batch sorted all the offers
            # due (a batch of 12 took 570 ms when 1.3M were due the same day).
            .order_by(d.answer_by, d.offer_id)
            .limit(limit)
        )
    ).all()
    cancelled = 0
    notices: list[dict[str, Any]] = []
    to_cancel: list[Any] = []
    # Closings that pass nothing on decide nothing for the next offer: written together.
    ends: dict[tuple[str, str | None], list[int]] = {}
    for r in due:
        if r.qty_waiting == 0 or not is_delayed(r.projected_date, r.promised_date):
            # It shipped, was filled or cancelled in the meantime, or its date came back
            # within the promise: nothing left to decide, and nothing to cancel.
            ends.setdefault(("closed", None), []).append(r.offer_id)
            continue
        if r.shown_at is None:
            # The offer never reached the customer (no chat, blocked, undeliverable): their
            # silence is not consent to anything, so people must reach them another way.
            ends.setdefault(("to_agents", "never_shown"), []).append(r.offer_id)
            continue
        if policy.no_answer_action == "agents":
            ends.setdefault(("to_agents", "no_answer"), []).append(r.offer_id)
            continue
        to_cancel.append(r)
    if to_cancel:
        # Closed first, only while still open: whoever changed it meanwhile (the customer's
        # answer) wins, and the line is not cancelled behind their back.
        still_open = set(
            await _close_all(conn, [r.offer_id for r in to_cancel], "cancelled", "no_answer", now)
        )
        to_cancel = [r for r in to_cancel if r.offer_id in still_open]
        units = await cancel_lines(
            conn, [r.line_id for r in to_cancel], reason="delay: no consent by the answer-by day"
        )
        # Without a chat the cancellation stays untold, like any change (see _offer_lines).
        told = [r.line_id for r in to_cancel if r.chat_id is not None]
        if told:
            await _told_cancelled(conn, told)
        details = []
        for r in to_cancel:
            qty = units.pop(r.line_id, 0)  # a line's units once, as one cancel after another
            details.append({"a_id": r.offer_id, "a_detail": json.dumps({"cancelled_qty": qty})})
            if r.chat_id is None:
                continue  # told nothing, like any change without a chat (the outbox's rule)
            notices.append(
                {
                    "dedupe_key": f"delaycancel:{r.offer_id}",
                    "chat_id": r.chat_id,
                    "customer_id": r.customer_id,
                    "kind": DELAY_CANCELLED,
                    "payload": {"offer_id": r.offer_id, "qty": qty},
                    "status": "pending",
                    "not_before": now,
                }
            )
        if details:
            await conn.execute(_ANSWER_DETAIL, details)
        cancelled = len(to_cancel)
    await insert_notices(conn, notices)
    ended = Counter[str]()
    for (status, answer), ids in ends.items():
        ended[status] += len(await _close_all(conn, ids, status, answer, now))
    return cancelled, ended["to_agents"], ended["closed"], len(due)


_ANSWER_DETAIL = (
    update(delay_offers)
    .where(delay_offers.c.offer_id == bindparam("a_id"))
    .values(answer_detail=bindparam("a_detail"))
)


def _close_statement(conn: AsyncConnection) -> Any:
    d = delay_offers.c
    return (
        update(delay_offers)
        .where(
            in_list(conn.dialect.name, d.offer_id, id_list("c_ids")),
            filter_only(d.status) == "open",
        )
        .values(
            status=bindparam("c_status"),
            answer=bindparam("c_answer"),
            answered_at=bindparam("c_now", type_=UTCDateTime()),
            answer_channel="policy",
            answer_detail=None,
        )
        .returning(d.offer_id)
    )


async def _close_all(
    conn: AsyncConnection, offer_ids: list[int], status: str, answer: str | None, now: datetime
) -> list[int]:
    """`_close` of the policy for many offers at once: those of them that were still open."""
    statement = built_once(("close offers", conn.dialect.name), lambda: _close_statement(conn))
    result = await conn.execute(
        statement, {"c_ids": offer_ids, "c_status": status, "c_answer": answer, "c_now": now}
    )
    return [int(i) for i in result.scalars()]


async def _told_cancelled(conn: AsyncConnection, line_ids: list[int]) -> None:
    ol = order_lines.c
    await conn.execute(
        update(order_lines)
        .where(ol.line_id.in_(line_ids))
        .values(
            told_cancelled_qty=ol.qty_cancelled,
            told_ready_qty=ol.qty_allocated + ol.qty_shipped,
        )
    )


async def _close(
    conn: AsyncConnection,
    offer_id: int,
    status: str,
    answer: str | None,
    now: datetime,
    channel: str,
    detail: dict[str, Any] | None,
    *,
    only_open: bool = True,
) -> int:
    """Close an offer; 1 if this call closed it, 0 if it was no longer open (``only_open``)."""
    q = update(delay_offers).where(delay_offers.c.offer_id == offer_id)
    if only_open:
        q = q.where(delay_offers.c.status == "open")
    result = await conn.execute(
        q.values(
            status=status,
            answer=answer,
            answered_at=now,
            answer_channel=channel,
            answer_detail=json.dumps(detail, sort_keys=True) if detail else None,
        )
    )
    return int(result.rowcount)


# --- the customer's side -----------------------------------------------------------------


async def offer_for(conn: AsyncConnection, offer_id: int, customer_id: int) -> Offer | None:
    """The offer, only if it is this customer's; None otherwise (whatever the reason)."""
    d = delay_offers.c
    ol = order_lines.c
    row = (
        await conn.execute(
            select(
                d.offer_id,
                d.line_id,
                d.order_id,
                orders.c.order_number,
                d.customer_id,
                d.seq,
                ol.line_no,
                ol.sku,
                ol.qty_waiting,
                ol.unit_price_minor,
                orders.c.currency,
                d.promised_date,
                d.revised_date,
                ol.projected_date,
                d.consent_needed,
                d.answer_by,
                d.status,
                d.answer,
            )
            .select_from(
                delay_offers.join(order_lines, ol.line_id == d.line_id).join(
                    orders, orders.c.order_id == d.order_id
                )
            )
            .where(d.offer_id == offer_id, orders.c.customer_id == customer_id)
        )
    ).first()
    if row is None:
        return None
    newest = await conn.scalar(select(func.max(d.seq)).where(d.line_id == row.line_id))
    open_lines = await conn.scalar(
        select(func.count()).where(
            ol.order_id == row.order_id, (ol.qty_waiting > 0) | (ol.qty_allocated > 0)
        )
    )
    return Offer(
        **{k: row._mapping[k] for k in row._mapping},
        latest=newest == row.seq,
        open_lines_in_order=int(open_lines or 0),
    )


def still_current(offer: Offer) -> bool:
    """Whether a press on this offer may still change anything."""
    return (
        offer.latest
        and offer.status in OPEN
        and offer.qty_waiting > 0
        and is_delayed(offer.projected_date, offer.promised_date)
    )


async def record_shown(
    conn: AsyncConnection,
    offer_id: int,
    *,
    text: str,
    buttons: list[str],
    channel: str,
    at: datetime,
) -> None:
    await conn.execute(
        update(delay_offers)
        .where(delay_offers.c.offer_id == offer_id)
        .values(shown_text=text, buttons=json.dumps(buttons), channel=channel, shown_at=at)
    )


async def answer_keep(conn: AsyncConnection, offer: Offer, now: datetime, channel: str) -> None:
    await _close(conn, offer.offer_id, "consented", "keep", now, channel, None, only_open=False)
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.line_id == offer.line_id)
        .values(delay_consent="accepted", delay_consent_at=now)
    )


async def answer_cancel(
    conn: AsyncConnection, offer: Offer, now: datetime, channel: str, *, whole_order: bool
) -> int:
    """Cancel the line (or its whole order) for the customer; returns the units cancelled
    and closes every open offer they cover."""
    reason = "delay: customer cancelled"
    if whole_order:
        result = await cancel_order(
            conn, offer.order_number, customer_id=offer.customer_id, reason=reason
        )
        lines = [
            int(r.line_id)
            for r in await conn.execute(
                select(order_lines.c.line_id).where(order_lines.c.order_id == offer.order_id)
            )
        ]
    else:
        result = await cancel_line(
            conn, offer.order_number, offer.line_no, customer_id=offer.customer_id, reason=reason
        )
        lines = [offer.line_id]
    await _told_cancelled(conn, lines)
    answer = "cancel_order" if whole_order else "cancel_line"
    await _close(
        conn,
        offer.offer_id,
        "cancelled",
        answer,
        now,
        channel,
        {"qty": result.cancelled_qty},
        only_open=False,
    )
    await conn.execute(
        update(delay_offers)
        .where(
            delay_offers.c.line_id.in_(lines),
            delay_offers.c.status.in_(OPEN),
            delay_offers.c.offer_id != offer.offer_id,
        )
        .values(status="closed", answer=answer, answered_at=now, answer_channel=channel)
    )
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.line_id.in_(lines))
        .values(delay_consent="declined", delay_consent_at=now)
    )
    return result.cancelled_qty


async def answer_alternative(
    conn: AsyncConnection,
    offer: Offer,
    now: datetime,
    channel: str,
    *,
    alt_sku: str,
    new_order_number: str | None,
    to_agents: bool,
) -> None:
    status = "to_agents" if to_agents else "cancelled"
    await _close(
        conn,
        offer.offer_id,
        status,
        "alternative",
        now,
        channel,
        {"sku": alt_sku, "new_order": new_order_number},
        only_open=False,
    )


async def next_order_number(conn: AsyncConnection) -> str:
    """A fresh order number for an order the bot places itself (an alternative): past the
    largest in the store, and never one given to another transaction (store.counters)."""
    largest = await conn.scalar(
        select(orders.c.order_number)
        .order_by(func.length(orders.c.order_number).desc(), orders.c.order_number.desc())
        .limit(1)
    )
    return str(await next_value(conn, "order_number", above=int(largest or 100000)))


@dataclass(frozen=True)
class ConsentReport:
    awaiting: int
    consented: int
    cancelled_for_delay: int
    to_agents: int


async def consent_report(conn: AsyncConnection) -> ConsentReport:
    d = delay_offers.c
    rows = await conn.execute(
        select(d.status, d.consent_needed, d.answer, func.count()).group_by(
            d.status, d.consent_needed, d.answer
        )
    )
    awaiting = consented = cancelled = agents = 0
    for status, needed, answer, n in rows:
        if status == "open" and needed:
            awaiting += n
        elif status == "consented" or (status == "open" and not needed):
            consented += n
        elif status == "cancelled" and answer != "alternative":
            cancelled += n
        elif status == "to_agents":
            agents += n
    return ConsentReport(awaiting, consented, cancelled, agents)


async def delay_lines(conn: AsyncConnection, status: str, limit: int = 50) -> list[Any]:
    """Offers for the admin report: 'awaiting', 'consented' or 'cancelled'."""
    d = delay_offers.c
    q = (
        select(
            orders.c.order_number,
            order_lines.c.line_no,
            order_lines.c.sku,
            d.promised_date,
            d.revised_date,
            d.answer_by,
            d.answer,
            d.answered_at,
            d.answer_channel,
        )
        .select_from(
            delay_offers.join(order_lines, order_lines.c.line_id == d.line_id).join(
                orders, orders.c.order_id == d.order_id
            )
        )
        .order_by(d.offer_id)
        .limit(limit)
    )
    if status == "awaiting":
        q = q.where(d.status == "open", d.consent_needed.is_(True))
    elif status == "consented":
        q = q.where(
            (d.status == "consented") | ((d.status == "open") & d.consent_needed.is_(False))
        )
    else:
        q = q.where(d.status == "cancelled", d.answer != "alternative")
    return list((await conn.execute(q)).all())


__all__ = [
    "ConsentReport",
    "DelayPolicy",
    "DelayRun",
    "FollowRun",
    "NotFound",
    "Offer",
    "answer_alternative",
    "answer_cancel",
    "answer_keep",
    "apply_delay_policy",
    "consent_report",
    "delay_lines",
    "delay_policy_batch",
    "follow_on_batch",
    "is_delayed",
    "next_order_number",
    "offer_for",
    "promise_of",
    "record_shown",
    "run_delay_policy",
    "run_follow_on",
    "still_current",
]

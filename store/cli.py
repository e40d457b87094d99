"""``backorder-admin``: the shop operations console.

Every change runs in one transaction; on error nothing is written, the reason goes to
stderr in one line per problem (never a traceback) and the exit code is non-zero. What a
change owes afterwards (the delay policy for the lines it touched, the customers' notices)
runs after its commit in short batches of their own, from the marks the change left
(store.marks): a command killed meanwhile leaves it to the next command or the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.numbers import get_currency_precision
from sqlalchemy import func, select
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm  # type: ignore[import-untyped]

from store.backorders import (
    PROJECTION_BATCH,
    allocations_owed,
    cancel_line,
    cancel_order,
    cancel_restock,
    change_restock_date,
    receive_restock,
    run_allocation,
    ship,
)
from store.db import Store, open_store
from store.delays import (
    BATCH,
    DelayPolicy,
    DelayRun,
    consent_report,
    delay_lines,
    run_delay_policy,
    run_follow_on,
)
from store.errors import NotFound, StoreError, db_reason, is_busy
from store.imports import (
    CLOCK_SKEW,
    KINDS,
    MAX_ID,
    MAX_LINE_NO,
    MAX_QTY,
    YEARS_AHEAD,
    YEARS_BACK,
    ImportFailed,
    RowError,
    apply_file,
    check_field,
    iso_date,
    parse_file,
    prepare_orders,
    strict_date,
    whole_number,
)
from store.insights import alerts as list_alerts
from store.insights import cause_report, compute_records, refresh_causes, set_reorder_point
from store.links import DEVELOPMENT_SECRET, make_link_code, secret_problem
from store.marks import NOTICE, pending, pending_projections, rescan
from store.outbox import NOTICE_BATCH, PENDING, NoticeRun, run_notices
from store.schema import (
    customers,
    delay_offers,
    order_lines,
    orders,
    outbox,
    products,
    restocks,
    stock,
)
from store.settings import SettingsError, StoreSettings, load_store_settings

# The bot's own default (bot.settings), so demo links work without configuring anything.
DEMO_LINK_SECRET = DEVELOPMENT_SECRET
BUSY = (
    "error: another import or admin command is writing to the store;"
    " nothing written, try again when it ends"
)
# Commands that change the store and then run what the change owes (follow_on).
CHANGES = ("import", "restock-date", "receive", "cancel", "ship", "catch-up")
REPORTS = ("suppliers", "causes", "alerts")
# Longest free text an operator types into a command (reasons, carriers, tracking numbers).
MAX_ARG_CHARS = {"--reason": 500, "--shipment-id": 64, "--carrier": 64, "--tracking": 100}


def _iso(value: str) -> str:
    # Only the form here: the window depends on the date's meaning, checked in _run.
    try:
        strict_date(value, "date")
    except RowError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("date: ")) from None
    return value


def _whole(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            return whole_number(value, "", lo, hi)
        except RowError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None

    return parse


def _line_qty(value: str) -> tuple[int, int]:
    try:
        no, qty = value.split(":")
        return whole_number(no, "", 1, MAX_LINE_NO), whole_number(qty, "", 0, MAX_QTY)
    except (ValueError, RowError):
        raise argparse.ArgumentTypeError(f"expected LINE_NO:QTY, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backorder-admin", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument(
        "--db", help="database URL (default: $DATABASE_URL or the SQLite file under var/)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("init", help="create or upgrade the database")

    imp = sub.add_parser("import", help="import a CSV file (docs/csv-formats.md)")
    imp.add_argument("kind", choices=KINDS)
    imp.add_argument("file", type=Path)
    imp.add_argument("--check", action="store_true", help="validate only, write nothing")

    rd = sub.add_parser("restock-date", help="change a restock's expected date")
    rd.add_argument("restock_id")
    rd.add_argument("date", type=_iso)
    rd.add_argument("--reason", required=True)

    rc = sub.add_parser("receive", help="book a restock as received")
    rc.add_argument("restock_id")
    rc.add_argument(
        "--qty", type=_whole(0, MAX_QTY), help="units received (default: the quantity ordered)"
    )

    cn = sub.add_parser("cancel", help="cancel an order line, an order or a restock")
    cn_sub = cn.add_subparsers(dest="what", required=True)
    cl = cn_sub.add_parser("line")
    cl.add_argument("order_number")
    cl.add_argument("line_no", type=_whole(1, MAX_LINE_NO))
    cl.add_argument("--reason", default="")
    co = cn_sub.add_parser("order")
    co.add_argument("order_number")
    co.add_argument("--reason", default="")
    cr = cn_sub.add_parser("restock")
    cr.add_argument("restock_id")
    cr.add_argument("--reason", default="")

    sh = sub.add_parser("ship", help="ship allocated units of an order")
    sh.add_argument("order_number")
    sh.add_argument("--shipment-id", required=True)
    sh.add_argument("--carrier", required=True)
    sh.add_argument("--tracking")
    sh.add_argument("--date", type=_iso, default=None, help="shipped on (default today)")
    sh.add_argument(
        "--line", type=_line_qty, action="append", help="LINE_NO:QTY (default: all allocated)"
    )

    cu = sub.add_parser(
        "catch-up",
        help="run the work changes left pending (delay policy, notices) in short batches",
    )
    cu.add_argument(
        "--batch-size",
        type=_whole(1, 100_000),
        help="lines per transaction (default: as many as take about 0.1 s)",
    )
    cu.add_argument(
        "--rescan",
        action="store_true",
        help="look at every line again (after a DELAY_* setting changed, or lines were"
        " written around backorder-admin and the bot)",
    )

    sub.add_parser("status", help="print the work still pending (marks, first pass, notices)")

    bk = sub.add_parser("backup", help="copy a SQLite store to PATH while the bot runs")
    bk.add_argument("path", type=Path)

    rp = sub.add_parser(
        "report",
        help="print the backorder report per SKU, or: suppliers (track records), causes (why"
        " lines wait; derives them first, in short batches), alerts (the team's)",
    )
    rp.add_argument("what", nargs="?", choices=REPORTS, help="one report (default: per SKU)")
    rp.add_argument("--limit", type=_whole(1, 10_000), default=50)
    rp.add_argument("--csv", action="store_true", help="CSV on stdout (suppliers, causes, alerts)")

    rpp = sub.add_parser(
        "reorder-point",
        help="set a SKU's own reorder point (the team is alerted when its free stock falls"
        " below it); without POINT, back to REORDER_POINT_DEFAULT",
    )
    rpp.add_argument("sku")
    rpp.add_argument("point", nargs="?", type=_whole(0, MAX_QTY))

    ln = sub.add_parser("link", help="print a deep link that links a Telegram chat to a customer")
    target = ln.add_mutually_exclusive_group(required=True)
    target.add_argument("--customer", type=_whole(1, MAX_ID), help="customer id")
    target.add_argument("--order", help="order number (the link opens that order)")
    ln.add_argument(
        "--bot-username", help="the bot's username (default: BOT_USERNAME, else backorder_demo_bot)"
    )
    ln.add_argument("--secret", help="the bot's LINK_SECRET (default: $LINK_SECRET)")
    ln.add_argument(
        "--days",
        type=_whole(0, 36_500),
        default=None,
        help="days the link stays valid (default: LINK_CODE_DAYS, else 30)",
    )

    dm = sub.add_parser("demo", help="fill an empty database with demo data")
    dm.add_argument("--size", choices=["small", "medium", "large"], default="small")
    dm.add_argument("--seed", type=_whole(0, MAX_ID), default=7)
    dm.add_argument("--force", action="store_true", help="even if the database is not empty")
    return p


def _check_values(args: argparse.Namespace) -> None:
    """What argparse cannot check alone (a date's window, free text), before the store is
    opened: a refused command does not even create a database."""
    if args.command == "restock-date":
        args.date = _checked(args.date, "date", back=YEARS_BACK, ahead=YEARS_AHEAD)
    elif args.command == "ship" and args.date is not None:
        args.date = _checked(args.date, "--date", back=YEARS_BACK, ahead=CLOCK_SKEW)
    for flag, limit in MAX_ARG_CHARS.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            try:
                check_field(flag, value, limit)
            except RowError as e:
                raise StoreError(str(e)) from None


async def _run(args: argparse.Namespace) -> int:
    _check_values(args)
    # Read before any change is written: a bad setting refuses the command, not its follow-on.
    changes = args.command in CHANGES and not getattr(args, "check", False)
    settings = follow_on_settings() if changes else None
    if args.command == "import":
        # Check the whole file before touching the database.
        parsed = parse_file(args.kind, args.file)
        rows = len(parsed)
        if args.check:
            print(f"{args.file.name}: ok")
            return 0
    if args.command == "backup":
        from store.backup import backup_sqlite

        pages = backup_sqlite(args.db or _settings().database_url, args.path)
        print(f"backup: {pages} pages written to {args.path}")
        return 0
    store = await open_store(args.db or _settings().database_url)
    try:
        if args.command == "init":
            print(f"database ready: {store.url}")
        elif args.command == "import":
            prepared = None
            if args.kind == "orders":
                # The store read for the file before the write lock is taken (issue #14).
                async with store.connect() as conn:
                    prepared = await prepare_orders(conn, parsed)
            with progress_bar(rows if rows >= 500 else 0, "import", " rows") as bar:
                async with store.begin() as conn:
                    r = await apply_file(
                        conn,
                        args.kind,
                        args.file,
                        progress=bar.update,
                        parsed=parsed,
                        prepared=prepared,
                    )
            print(f"{args.file.name}: {r.rows} rows, {r.changed} changed")
        elif args.command == "restock-date":
            async with store.begin() as conn:
                proj = await change_restock_date(conn, args.restock_id, args.date, args.reason)
            print(
                f"{args.restock_id}: "
                + (
                    "date unchanged"
                    if proj is None
                    else f"{len(proj.moved)} lines moved"
                    + (
                        " in the change; the rest of the queue is projected in batches"
                        if proj.pending
                        else ""
                    )
                )
            )
        elif args.command == "receive":
            async with store.begin() as conn:
                rec = await receive_restock(conn, args.restock_id, args.qty)
            if rec.changed and rec.allocating:
                print(
                    f"{rec.restock_id}: received {rec.qty}, allocated"
                    f" {sum(a.qty for a in rec.allocated)} to {len(rec.allocated)} lines;"
                    " the rest is allocated in batches"
                )
            elif rec.changed:
                print(
                    f"{rec.restock_id}: received {rec.qty}, allocated {rec.qty - rec.to_free_stock}"
                    f" to {len(rec.allocated)} lines, {rec.to_free_stock} to free stock"
                )
            else:
                print(f"{rec.restock_id}: already received")
        elif args.command == "cancel":
            async with store.begin() as conn:
                if args.what == "line":
                    c = await cancel_line(conn, args.order_number, args.line_no, reason=args.reason)
                    print(
                        f"order {args.order_number} line {args.line_no}:"
                        f" cancelled {c.cancelled_qty}"
                    )
                elif args.what == "order":
                    c = await cancel_order(conn, args.order_number, reason=args.reason)
                    print(f"order {args.order_number}: cancelled {c.cancelled_qty}")
                else:
                    proj = await cancel_restock(conn, args.restock_id, args.reason)
                    print(
                        f"{args.restock_id}: "
                        + ("already cancelled" if proj is None else "cancelled")
                    )
        elif args.command == "ship":
            async with store.begin() as conn:
                s = await ship(
                    conn,
                    args.shipment_id,
                    args.order_number,
                    carrier=args.carrier,
                    tracking_number=args.tracking,
                    shipped_on=args.date or date.today(),
                    lines=dict(args.line) if args.line else None,
                )
            print(
                f"{s.shipment_id}: "
                + (
                    f"shipped {sum(a.qty for a in s.lines)} units"
                    if s.changed
                    else "already recorded"
                )
            )
        elif args.command == "catch-up":
            # The follow-on below is the whole command.
            if args.rescan:
                async with store.begin() as conn:
                    await rescan(conn)
                    await rescan(conn, NOTICE)
        elif args.command == "status":
            async with store.connect() as conn:
                await _status(conn)
        elif args.command == "reorder-point":
            async with store.begin() as conn:
                await set_reorder_point(conn, args.sku, args.point)
            print(
                f"{args.sku}: reorder point "
                + ("default" if args.point is None else str(args.point))
            )
        elif args.command == "report" and args.what is not None:
            await _insights_report(store, args.what, args.limit, args.csv)
        elif args.command == "report":
            async with store.connect() as conn:
                await _report(conn, args.limit)
                await _delay_report(conn, args.limit)
        elif args.command == "link":
            async with store.connect() as conn:
                code = await _link_code(conn, args)
            username = (args.bot_username or _settings().bot_username).lstrip("@")
            print(f"https://t.me/{username}?start={code}")
        elif args.command == "demo":
            from store.demo import fill_demo, is_empty

            async with store.connect() as conn:
                empty = await is_empty(conn)
            if not empty and not args.force:
                raise StoreError("database is not empty (use --force to add demo data anyway)")
            summary = await fill_demo(store, args.size, args.seed)
            print(summary)
        if settings is not None:
            run, queued = await follow_on(
                store, settings, batch_size=getattr(args, "batch_size", None)
            )
            if args.command == "catch-up":
                print(
                    f"delay policy: {run.offered} offered, {run.cancelled} cancelled,"
                    f" {run.to_agents} to agents, {run.closed} closed;"
                    f" {run.lines} lines looked at in {run.batches} batches;"
                    f" {queued.notices} notices queued"
                )
        return 0
    finally:
        await store.close()


def _checked(value: str, name: str, *, back: int, ahead: int | timedelta) -> date:
    try:
        return iso_date(value, name, date.today(), back=back, ahead=ahead)
    except RowError as e:
        raise StoreError(str(e)) from None


async def _link_code(conn: AsyncConnection, args: argparse.Namespace) -> str:
    settings = _settings()
    if args.days is None:
        args.days = settings.link_code_days
    if not 1 <= args.days <= 365:
        raise StoreError("--days must be between 1 and 365")
    source, secret = "--secret", args.secret
    if secret is None:
        source, secret = "LINK_SECRET", settings.link_secret.get_secret_value() or None
    if secret is None:
        print(
            "warning: LINK_SECRET is not set; using the development secret, which only the"
            " sandbox accepts: a bot with a real token refuses codes signed with it",
            file=sys.stderr,
        )
        secret = DEMO_LINK_SECRET
    else:
        # Checked as the bot checks its own: a code signed with a weak secret is one anybody
        # could forge, and the real bot would refuse to start with it.
        problem = secret_problem(secret)
        if problem is not None:
            raise StoreError(f"{source} {problem}")
    order_id: int | None = None
    if args.order is not None:
        row = (
            await conn.execute(
                select(orders.c.order_id, orders.c.customer_id).where(
                    orders.c.order_number == args.order.strip()
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"no order {args.order}")
        order_id, customer_id = int(row.order_id), int(row.customer_id)
    else:
        customer_id = args.customer
        found = await conn.scalar(
            select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
        )
        if found is None:
            raise NotFound(f"no customer {customer_id}")
    expires_at = datetime.now(UTC) + timedelta(days=args.days)
    return make_link_code(secret, customer_id, expires_at=expires_at, order_id=order_id)


def _settings() -> StoreSettings:
    """The settings the bot reads too (store.settings): one name, default and check each."""
    try:
        return load_store_settings()
    except SettingsError as e:
        raise StoreError(str(e)) from None


@dataclass(frozen=True)
class FollowOnSettings:
    policy: DelayPolicy
    zone: ZoneInfo
    threshold_days: int


def follow_on_settings() -> FollowOnSettings:
    """The delay policy and notice settings, as the bot reads them."""
    s = _settings()
    return FollowOnSettings(s.delay_policy, s.zone, s.notice_threshold_days)


async def follow_on(
    store: Store,
    settings: FollowOnSettings,
    *,
    batch_size: int | None = None,
    now: datetime | None = None,
    show: bool | None = None,
) -> tuple[DelayRun, NoticeRun]:
    """What the changes so far owe, each batch its own short transaction: the projection of
    the queues the changes asked for (store.backorders.run_projection, which marks the lines
    it moves), the delay policy from the marks (and the first pass, if it is not done), then
    the notices from theirs. A progress bar on a terminal (``show`` None), nothing
    otherwise."""
    now = now or datetime.now(UTC)
    today = now.astimezone(settings.zone).date()
    async with store.connect() as conn:
        walks = await pending_projections(conn)
    todo = walks.lines_left
    await run_allocation(store)  # a big receipt's units first: the projection follows them
    with progress_bar(todo if todo >= PROJECTION_BATCH else 0, "projection", " lines", show) as bar:
        # The walks do the policy and the notices of the lines they move themselves
        # (store.delays.follow_on_batch); the stages' own batches below do what they left.
        await run_follow_on(
            store,
            today=today,
            now=now,
            policy=settings.policy,
            threshold_days=settings.threshold_days,
            batch_size=batch_size,
            on_batch=lambda r: bar.update(r.lines),
        )
    async with store.connect() as conn:
        left = await pending(conn)
    todo = left.marked + left.scan_left
    shown = batch_size or BATCH
    with progress_bar(todo if todo >= shown else 0, "delay policy", " lines", show) as bar:
        run = await run_delay_policy(
            store,
            today=today,
            now=now,
            policy=settings.policy,
            batch_size=batch_size,
            on_batch=lambda r: bar.update(r.lines),
        )
    async with store.connect() as conn:
        todo = (await pending(conn, NOTICE)).marked
    with progress_bar(todo if todo >= NOTICE_BATCH else 0, "notices", " lines", show) as bar:
        queued = await run_notices(
            store,
            threshold_days=settings.threshold_days,
            now=now,
            batch_size=batch_size,
            on_batch=lambda r: bar.update(r.lines),
        )
    return run, queued


def progress_bar(total: int, desc: str, unit: str, show: bool | None = None) -> Any:
    """A progress bar on stderr when it is a terminal (``show`` None: tqdm's own test),
    nothing otherwise, nor for work too small to watch (``total`` 0)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=True if total == 0 else (None if show is None else not show),
        file=sys.stderr,
        leave=False,
    )


async def _status(conn: AsyncConnection) -> None:
    left = await pending(conn)
    now = datetime.now(UTC)
    o = outbox.c
    due = await conn.scalar(select(func.count()).where(o.status == PENDING, o.not_before <= now))
    backlog = await conn.scalar(select(func.count()).where(o.status == PENDING))
    d = delay_offers.c
    deadlines = await conn.scalar(
        select(func.count()).where(
            d.status == "open", d.consent_needed.is_(True), d.answer_by < date.today()
        )
    )
    scanned = left.lines - left.scan_left
    share = f"{100 * scanned / left.lines:.1f}%" if left.lines else "100%"
    told = await pending(conn, NOTICE)
    print(f"lines marked, not passed yet: {left.marked}")
    print(f"first pass: {scanned} of {left.lines} lines looked at ({share}), {left.scan_left} left")
    print(f"delay offers past their answer-by day: {deadlines}")
    print(f"notices due now: {due}; outbox backlog (pending): {backlog}")
    print(
        f"notice queueing: {told.marked} lines marked, {told.scan_left} lines not looked at"
        " yet (each after the delay policy)"
    )
    walks = await pending_projections(conn)
    print(
        f"projection: {walks.skus} SKUs owe one, {walks.lines_left} waiting lines not walked"
        " yet (before the delay policy)"
    )
    skus, units = await allocations_owed(conn)
    print(f"allocation: {skus} SKUs with {units} received units not given out yet (batches)")
    if left.updated_at is not None:
        print(f"last batch of the policy: {left.updated_at:%Y-%m-%d %H:%M:%S} UTC")


async def _delay_report(conn: AsyncConnection, limit: int) -> None:
    totals = await consent_report(conn)
    print()
    print(
        f"delays: {totals.awaiting} awaiting consent, {totals.consented} consented,"
        f" {totals.cancelled_for_delay} cancelled for delay, {totals.to_agents} with agents"
    )
    for status, title in (
        ("awaiting", "awaiting consent"),
        ("consented", "consented"),
        ("cancelled", "cancelled for delay"),
    ):
        rows = await delay_lines(conn, status, limit)
        if not rows:
            continue
        print(f"{title}:")
        for r in rows:
            answered = (
                f" {r.answer} {r.answered_at:%Y-%m-%d %H:%M} via {r.answer_channel}"
                if r.answered_at
                else ""
            )
            print(
                f"  {r.order_number} line {r.line_no} {r.sku}: promised {r.promised_date},"
                f" now {r.revised_date or 'unknown'}"
                + (f", answer by {r.answer_by}" if r.answer_by and not r.answered_at else "")
                + answered
            )


async def _report(conn: AsyncConnection, limit: int) -> None:
    ol = order_lines.c
    waiting = (
        select(
            ol.sku,
            func.count().label("lines"),
            func.sum(ol.qty_waiting).label("units"),
            func.count(ol.projected_date).label("dated"),
        )
        .where(ol.qty_waiting > 0)
        .group_by(ol.sku)
        .subquery()
    )
    next_rs = (
        select(
            restocks.c.sku,
            func.min(restocks.c.expected_date).label("next_date"),
            func.sum(restocks.c.qty - restocks.c.qty_received).label("due"),
        )
        .where(restocks.c.status == "open")
        .group_by(restocks.c.sku)
        .subquery()
    )
    rows = (
        await conn.execute(
            select(
                waiting.c.sku,
                products.c.name_en,
                waiting.c.lines,
                waiting.c.units,
                waiting.c.dated,
                (stock.c.on_hand - stock.c.allocated).label("free"),
                next_rs.c.next_date,
                next_rs.c.due,
            )
            .select_from(
                waiting.join(products, products.c.sku == waiting.c.sku)
                .outerjoin(stock, stock.c.sku == waiting.c.sku)
                .outerjoin(next_rs, next_rs.c.sku == waiting.c.sku)
            )
            .order_by(waiting.c.units.desc(), waiting.c.sku)
            .limit(limit)
        )
    ).all()
    print(
        f"{'SKU':<10} {'product':<32} {'lines':>6} {'units':>6} {'undated':>7}"
        f" {'due':>6}  next date"
    )
    for r in rows:
        print(
            f"{r.sku:<10} {r.name_en[:32]:<32} {r.lines:>6} {r.units:>6} {r.lines - r.dated:>7}"
            f" {r.due or 0:>6}  {r.next_date.isoformat() if r.next_date else '-'}"
        )
    if not rows:
        print("no backorders")


async def _insights_report(store: Store, what: str, limit: int, as_csv: bool) -> None:
    """The insights' reports (store.insights): a table on a terminal, or CSV."""
    out = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
    settings = _settings()

    def row(*values: Any) -> None:
        if out is not None:
            out.writerow(values)

    if what == "suppliers":
        async with store.connect() as conn:
            recs = await compute_records(
                conn,
                min_deliveries=settings.insights_min_deliveries,
                zone=ZoneInfo(settings.shop_timezone),
            )
        row(
            "scope", "key", "deliveries", "on_time_share", "slip_median", "slip_p80",
            "slip_worst", "moved_share", "lead_median", "enough",
        )  # fmt: skip
        if out is None:
            print(
                f"{'supplier/SKU':<14} {'deliv':>5} {'on time':>7} {'median':>6} {'p80':>4}"
                f" {'worst':>5} {'moved':>6} {'lead':>5}"
            )
        # SKUs with a record first, the slowest first.
        skus = sorted(recs.skus, key=lambda r: (not r.enough, -r.slip_p80, r.key))
        for rec in [*recs.suppliers, *skus[:limit]]:
            row(
                rec.scope, rec.key, rec.deliveries, f"{rec.on_time_share:.3f}", rec.slip_median,
                rec.slip_p80, rec.slip_worst, f"{rec.moved_share:.3f}",
                "" if rec.lead_median is None else rec.lead_median, int(rec.enough),
            )  # fmt: skip
            lead = "-" if rec.lead_median is None else str(rec.lead_median)
            if out is None and rec.enough:
                print(
                    f"{rec.key:<14} {rec.deliveries:>5} {rec.on_time_share:>7.0%}"
                    f" {rec.slip_median:>6} {rec.slip_p80:>4} {rec.slip_worst:>5}"
                    f" {rec.moved_share:>6.0%} {lead:>5}"
                )
            elif out is None:
                print(
                    f"{rec.key:<14} {rec.deliveries:>5}  not enough history"
                    f" (fewer than {settings.insights_min_deliveries} deliveries)"
                )
        if out is None and not recs.suppliers:
            print("no deliveries yet")
    elif what == "causes":
        await refresh_causes(store)
        async with store.connect() as conn:
            totals, detail = await cause_report(conn, limit)
        row("cause", "supplier", "sku", "lines", "customers", "money", "currency")
        for r in [*totals, *detail]:
            places = get_currency_precision(r.currency)
            money = format(Decimal(r.money_minor).scaleb(-places), f".{places}f")
            row(r.cause, r.supplier_id or "", r.sku or "", r.lines, r.customers, money, r.currency)
            if out is None:
                print(
                    f"{r.cause:<18} {r.supplier_id or '-':<8} {r.sku or 'all':<10} {r.lines:>7}"
                    f" lines {r.customers:>7} customers {money:>14} {r.currency}"
                )
            if out is None and r is totals[-1]:
                print()
        if out is None and not totals:
            print("no lines waiting")
    else:
        async with store.connect() as conn:
            found = await list_alerts(conn, limit=limit)
        row("key", "kind", "active", "since", "told_at", "cleared_at", "data")
        for a in found:
            data = json.dumps(a.data, sort_keys=True)
            stamps = [t.isoformat(timespec="seconds") if t else "" for t in
                      (a.since, a.told_at, a.cleared_at)]  # fmt: skip
            row(a.key, a.kind, int(a.active), *stamps, data)
            if out is None:
                state = "active" if a.active else f"cleared {stamps[2]}"
                print(f"{a.key:<40} {state:<28} since {stamps[0]}  {data}")
        if out is None and not found:
            print("no alerts")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return asyncio.run(_run(args))
    except ImportFailed as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        print("nothing written", file=sys.stderr)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
    except DBAPIError as e:
        # SQLite's busy timeout (store.db) has run out, or the database cannot be used: one
        # line either way, and the transaction was rolled back.
        print(BUSY if is_busy(e) else f"error: the store failed: {db_reason(e)}", file=sys.stderr)
    except ArgumentError as e:
        print(f"error: --db/DATABASE_URL: {db_reason(e)}", file=sys.stderr)
    except SQLAlchemyError as e:
        print(f"error: the store failed: {db_reason(e)}", file=sys.stderr)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
    except ImportError as e:  # the URL names a driver this installation lacks (asyncpg)
        print(f"error: --db/DATABASE_URL: driver not installed: {e.name}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

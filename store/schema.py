"""The one schema of the backorder store (SQLAlchemy Core).

Portable on purpose: plain types, partial indexes declared for both SQLite and PostgreSQL,
no SQLite-only constructs. Migrations in ``store/migrations`` are the source of truth for
the database; this module is what the queries are written against and must stay in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out.

    SQLite has no time zones, so values are stored naive in UTC; normalising on the way in
    keeps PostgreSQL and SQLite comparing the same instants.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index of the rows ``where`` holds for, on both backends. A query uses it only if
    its own WHERE says the same, with literals (SQLite cannot see through a bound value)."""
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


SKU = String(32)
ORDER_NUMBER = String(32)

products = Table(
    "products",
    metadata,
    Column("sku", SKU, primary_key=True),
    Column("name_en", String(200), nullable=False),
    Column("name_de", String(200)),
    Column("name_es", String(200)),
    Column("name_ru", String(200)),
    Column("category", String(64), nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("backorderable", Boolean, nullable=False, server_default=true()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("price_minor >= 0", name="price_nonneg"),
    Index(None, "category"),
    Index(None, "updated_at"),
)

product_alternatives = Table(
    "product_alternatives",
    metadata,
    Column("sku", SKU, ForeignKey("products.sku"), primary_key=True),
    Column("alt_sku", SKU, ForeignKey("products.sku"), primary_key=True),
    Column("rank", Integer, nullable=False, server_default=text("0")),
)

suppliers = Table(
    "suppliers",
    metadata,
    Column("supplier_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(200)),
    Column("lead_days", Integer),
    Column("created_at", UTCDateTime, nullable=False),
)

# Physical stock: on_hand counts units in the warehouse, allocated the part of them promised
# to order lines and not yet shipped; free = on_hand - allocated.
stock = Table(
    "stock",
    metadata,
    Column("sku", SKU, ForeignKey("products.sku"), primary_key=True),
    Column("on_hand", BigInteger, nullable=False, server_default=text("0")),
    Column("allocated", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("allocated >= 0 AND allocated <= on_hand", name="allocated_within"),
)

restocks = Table(
    "restocks",
    metadata,
    Column("restock_id", String(64), primary_key=True),
    Column("supplier_id", String(64), ForeignKey("suppliers.supplier_id"), nullable=False),
    Column("sku", SKU, ForeignKey("products.sku"), nullable=False),
    Column("qty", BigInteger, nullable=False),
    Column("expected_date", Date, nullable=False),
    Column("status", String(16), nullable=False, server_default=text("'open'")),
    Column("qty_received", BigInteger, nullable=False, server_default=text("0")),
    Column("received_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("qty > 0", name="qty_pos"),
    CheckConstraint("status IN ('open', 'received', 'cancelled')", name="status_known"),
    Index(None, "sku", "status", "expected_date"),
)

restock_date_changes = Table(
    "restock_date_changes",
    metadata,
    Column("change_id", Integer, primary_key=True, autoincrement=True),
    Column("restock_id", String(64), ForeignKey("restocks.restock_id"), nullable=False),
    Column("old_date", Date, nullable=False),
    Column("new_date", Date, nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Index(None, "restock_id", "changed_at"),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False),
    Column("phone", String(40)),
    Column("postcode", String(20)),
    Column("language", String(8), nullable=False, server_default=text("'en'")),
    Column("notify_delays", Boolean, nullable=False, server_default=true()),
    Column("notify_back_in_stock", Boolean, nullable=False, server_default=true()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("notify_shipping", Boolean, nullable=False, server_default=true()),
    # Set when Telegram answered 403 (the customer blocked the bot): nothing more is sent.
    Column("unreachable_at", UTCDateTime),
    Index(None, "email"),
)

chats = Table(
    "chats",
    metadata,
    Column("chat_id", BigInteger, primary_key=True, autoincrement=False),
    Column("language", String(8)),
    Column("customer_id", Integer, ForeignKey("customers.customer_id"), unique=True),
    Column("misses", Integer, nullable=False, server_default=text("0")),
    # The update the last miss was counted for: a crash replay of that update (answered again
    # after its process died) counts nothing more, so its reply is the same as the first one.
    Column("last_miss_update", BigInteger),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The question the bot is waiting for an answer to (e.g. "order_number", "proof"), so any
    # bot process can take the answer; a step older than PENDING_TTL in store.chats is ignored.
    Column("pending", String(32)),
    Column("pending_order", ORDER_NUMBER),
    Column("pending_at", UTCDateTime),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Integer, primary_key=True, autoincrement=True),
    Column("order_number", ORDER_NUMBER, nullable=False, unique=True),
    Column("customer_id", Integer, ForeignKey("customers.customer_id"), nullable=False),
    Column("placed_at", UTCDateTime, nullable=False),
    # Higher priority is served first; ties go to the earlier order.
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("currency", String(3), nullable=False),
    Column("cancelled_at", UTCDateTime),
    Index(None, "customer_id", "placed_at"),
)

# qty_waiting = ordered - allocated - shipped - cancelled, kept in the row so the per-SKU
# queue is one partial index scan. The queue key (queue_rank, queued_at, line_id) copies
# the order's (queue_rank = -priority, so one ascending index serves the queue) and spares
# the queue a join. The queue index also carries what allocation and projection read and
# compare (qty_waiting, projected_date, waits_for_restock_id): a SKU's lines are spread
# over the whole table, its index entries sit together. A line's place in the queue is not
# stored (a receipt would shift the place of every line behind the filled ones, rows spread
# over the whole table): readers count the waiting lines ahead of it on this index, from
# the nearest of the queue_marks.
order_lines = Table(
    "order_lines",
    metadata,
    Column("line_id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", Integer, ForeignKey("orders.order_id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", SKU, ForeignKey("products.sku"), nullable=False),
    Column("qty_ordered", Integer, nullable=False),
    Column("qty_allocated", Integer, nullable=False, server_default=text("0")),
    Column("qty_shipped", Integer, nullable=False, server_default=text("0")),
    Column("qty_cancelled", Integer, nullable=False, server_default=text("0")),
    Column("qty_waiting", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("queue_rank", Integer, nullable=False, server_default=text("0")),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("promised_date", Date),
    Column("projected_date", Date),
    Column("previous_projected_date", Date),
    Column("projected_changed_at", UTCDateTime),
    Column("waits_for_restock_id", String(64), ForeignKey("restocks.restock_id")),
    Column("last_told_date", Date),
    Column("last_told_at", UTCDateTime),
    # None: never asked; 'asked' | 'accepted' | 'declined'.
    Column("delay_consent", String(16)),
    Column("delay_consent_at", UTCDateTime),
    # Units the customer has been told about (or queued a notice for), so each allocation,
    # shipment and cancellation is news exactly once.
    Column("told_ready_qty", Integer, nullable=False, server_default=text("0")),
    Column("told_shipped_qty", Integer, nullable=False, server_default=text("0")),
    Column("told_cancelled_qty", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("order_id", "line_no"),
    CheckConstraint("qty_ordered > 0", name="qty_ordered_pos"),
    CheckConstraint(
        "qty_allocated >= 0 AND qty_shipped >= 0 AND qty_cancelled >= 0 AND qty_waiting >= 0"
        " AND qty_allocated + qty_shipped + qty_cancelled + qty_waiting = qty_ordered",
        name="qty_balance",
    ),
    partial_index(
        "ix_order_lines_queue",
        "sku",
        "queue_rank",
        "queued_at",
        "line_id",
        "qty_waiting",
        "projected_date",
        "waits_for_restock_id",
        where="qty_waiting > 0",
    ),
    partial_index("ix_order_lines_allocated", "sku", where="qty_allocated > 0"),
    Index("ix_order_lines_order", "order_id"),
)

# Marks in each SKU's queue, every MARK_EVERY-th waiting line (store.backorders): the line's
# queue key and how many waiting lines are ahead of it. Rewritten with the projection each
# time the queue changes (a few rows per SKU instead of every line's place), so a reader
# counts a line's place from the nearest mark before it: a short range of the queue index.
queue_marks = Table(
    "queue_marks",
    metadata,
    Column("sku", SKU, primary_key=True),
    Column("queue_rank", Integer, primary_key=True),
    Column("queued_at", UTCDateTime, primary_key=True),
    Column("line_id", Integer, primary_key=True),
    Column("lines_before", Integer, nullable=False),
)

shipments = Table(
    "shipments",
    metadata,
    Column("shipment_id", String(64), primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.order_id"), nullable=False),
    Column("carrier", String(64), nullable=False),
    Column("tracking_number", String(100)),
    Column("shipped_on", Date, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "order_id"),
)

shipment_lines = Table(
    "shipment_lines",
    metadata,
    Column("shipment_id", String(64), ForeignKey("shipments.shipment_id"), primary_key=True),
    Column("line_id", Integer, ForeignKey("order_lines.line_id"), primary_key=True),
    Column("qty", Integer, nullable=False),
    CheckConstraint("qty > 0", name="qty_pos"),
)

# Append-only: rows are inserted, never updated or deleted.
events = Table(
    "events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("sku", SKU),
    Column("order_id", Integer),
    Column("line_id", Integer),
    Column("restock_id", String(64)),
    Column("customer_id", Integer),
    Column("data", Text),
    Index(None, "kind", "at"),
    Index(None, "sku", "at"),
)

# Ids of operations already applied, so a re-run with the same id is a no-op.
operations = Table(
    "operations",
    metadata,
    Column("op_id", String(100), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", Integer, primary_key=True, autoincrement=True),
    # The same change must never be queued twice: the key names the change.
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("chat_id", BigInteger, nullable=False),
    Column("customer_id", Integer, ForeignKey("customers.customer_id")),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("not_before", UTCDateTime, nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_until", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "status IN ('pending', 'sent', 'failed', 'dead', 'no_chat', 'skipped', 'superseded')",
        name="status_known",
    ),
    # Notices are looked up only while they wait: the due ones in order (store.outbox.
    # claim_due), a customer's (merged, superseded, closed when the customer blocks the bot).
    # Indexes over every notice ever sent took each new one to a random page of a big tree:
    # a date change told to 81,737 customers wrote 1,100 pages a batch, 620 without them.
    # Their queries say 'pending' as a literal (store.outbox.PENDING).
    partial_index("ix_outbox_pending_due", "not_before", where="status = 'pending'"),
    partial_index("ix_outbox_pending_customer", "customer_id", where="status = 'pending'"),
)

# The record of every delay-option offer (US FTC Mail Order Rule): what was shown, which
# buttons, the answer, when and through which channel. One row per offer; seq counts the
# offers made for a line (1 = the first delay).
delay_offers = Table(
    "delay_offers",
    metadata,
    Column("offer_id", Integer, primary_key=True, autoincrement=True),
    Column("line_id", Integer, ForeignKey("order_lines.line_id"), nullable=False),
    Column("order_id", Integer, ForeignKey("orders.order_id"), nullable=False),
    Column("customer_id", Integer, ForeignKey("customers.customer_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("promised_date", Date, nullable=False),
    Column("revised_date", Date),  # None: not known yet
    Column("consent_needed", Boolean, nullable=False),
    Column("answer_by", Date),  # explicit consent needed by this day, else the line is cancelled
    Column("buttons", Text, nullable=False),  # JSON list of the callback data offered
    Column("shown_text", Text),  # the text as the customer saw it, set when delivered
    Column("offered_at", UTCDateTime, nullable=False),
    Column("shown_at", UTCDateTime),
    Column("channel", String(32)),
    Column("status", String(16), nullable=False),
    Column("answer", String(32)),
    Column("answered_at", UTCDateTime),
    Column("answer_channel", String(32)),
    Column("answer_detail", Text),
    CheckConstraint(
        "status IN ('open', 'consented', 'cancelled', 'to_agents', 'superseded', 'closed')",
        name="status_known",
    ),
    UniqueConstraint("line_id", "seq"),
    # The offers due, in the order the policy decides them (store.delays._enforce_deadlines):
    # read from the index, not sorted (1.3M due the same day in the 1M-order store).
    Index(None, "status", "answer_by", "offer_id"),
)

back_in_stock_subscriptions = Table(
    "back_in_stock_subscriptions",
    metadata,
    Column("subscription_id", Integer, primary_key=True, autoincrement=True),
    Column("chat_id", BigInteger, ForeignKey("chats.chat_id"), nullable=False),
    Column("customer_id", Integer, ForeignKey("customers.customer_id")),
    Column("sku", SKU, ForeignKey("products.sku"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("notified_at", UTCDateTime),
    UniqueConstraint("chat_id", "sku"),
    Index(None, "sku"),
)

used_link_tokens = Table(
    "used_link_tokens",
    metadata,
    Column("token_id", String(100), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=False),
)

verification_attempts = Table(
    "verification_attempts",
    metadata,
    Column("attempt_id", Integer, primary_key=True, autoincrement=True),
    Column("chat_id", BigInteger, nullable=False),
    Column("order_number", ORDER_NUMBER, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "chat_id", "at"),
    Index(None, "order_number", "at"),
)

# One row per customer chat that was ever handed to a person: the chat's forum topic in the
# support group, reused for every later escalation. UNIQUE(chat_id) is what keeps it one topic
# even when two bot processes escalate the same customer at once.
handoffs = Table(
    "handoffs",
    metadata,
    Column("handoff_id", Integer, primary_key=True, autoincrement=True),
    # The chat the topic talks to now; NULL when the topic is detached from every chat (its
    # customer moved to another Telegram account that has its own topic, or the chat was
    # relinked to someone else).
    Column("chat_id", BigInteger, ForeignKey("chats.chat_id"), unique=True),
    # The linked customer whose topic this is: one topic per customer, following their link
    # from chat to chat. NULL for an unlinked chat's topic (one per chat).
    Column("customer_id", Integer, ForeignKey("customers.customer_id"), unique=True),
    Column("support_chat_id", BigInteger, nullable=False),
    Column("thread_id", BigInteger),
    Column("card_message_id", BigInteger),
    # 'waiting': the customer wrote last (or nobody yet); 'answered': an agent did; 'closed'.
    Column("state", String(16), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("customer_name", String(200), nullable=False),
    Column("username", String(64)),
    Column("telegram_language", String(16)),
    Column("escalations", Integer, nullable=False, server_default=text("0")),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("last_activity_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    Column("no_answer_due_at", UTCDateTime),
    Column("no_answer_told_at", UTCDateTime),
    Column("closed_at", UTCDateTime),
    Column("customer_blocked", Boolean, nullable=False, server_default=false()),
    # Who opens the missing topic: the escalating process until then, the sweep after.
    Column("topic_lease_until", UTCDateTime),
    # What the context card shows (a digest of its text) and when the sweep last compared it
    # with the store, so that changes no notice reports still reach the card.
    Column("card_digest", String(64)),
    Column("card_checked_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("support_chat_id", "thread_id"),
    CheckConstraint("state IN ('waiting', 'answered', 'closed')", name="state_known"),
    CheckConstraint(
        "reason IN ('asked', 'misunderstood', 'delay_policy', 'agent_pulled')", name="reason_known"
    ),
    Index(None, "state", "no_answer_due_at"),
    Index(None, "state", "last_activity_at"),
)

# Every escalation of a handoff, for the card's history ("earlier escalations").
handoff_escalations = Table(
    "handoff_escalations",
    metadata,
    Column("escalation_id", Integer, primary_key=True, autoincrement=True),
    Column("handoff_id", Integer, ForeignKey("handoffs.handoff_id"), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    # 'agent' | 'idle' | 'customer' | 'failed' | 'moved'
    Column("ended_by", String(16)),
    Column("agent_name", String(200)),
    Index(None, "handoff_id", "started_at"),
)

# Customer messages that arrived while the topic did not exist yet, relayed once it does.
handoff_held = Table(
    "handoff_held",
    metadata,
    Column("held_id", Integer, primary_key=True, autoincrement=True),
    Column("handoff_id", Integer, ForeignKey("handoffs.handoff_id"), nullable=False),
    Column("source_chat_id", BigInteger, nullable=False),
    Column("source_message_id", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("source_chat_id", "source_message_id"),
    Index(None, "handoff_id", "held_id"),
)

# Which relayed copy belongs to which original, so edits can follow; dropped at hand-back.
handoff_messages = Table(
    "handoff_messages",
    metadata,
    Column("link_id", Integer, primary_key=True, autoincrement=True),
    Column("handoff_id", Integer, ForeignKey("handoffs.handoff_id"), nullable=False),
    Column("source_chat_id", BigInteger, nullable=False),
    Column("source_message_id", BigInteger, nullable=False),
    Column("copy_chat_id", BigInteger, nullable=False),
    Column("copy_message_id", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("source_chat_id", "source_message_id"),
    Index(None, "handoff_id"),
)

# Every update the bot fetched, saved before the fetch is confirmed to Telegram (the next
# getUpdates offset, or the webhook's 200), so a killed process replays what it never answered.
# answered_at NULL: not answered yet. Answered rows are kept for a while (store.inbox.
# KEEP_ANSWERED) so that the batch Telegram delivers again after a restart is recognised.
update_inbox = Table(
    "update_inbox",
    metadata,
    Column("update_id", BigInteger, primary_key=True, autoincrement=False),
    Column("payload", Text, nullable=False),  # the update's JSON as Telegram sent it
    Column("received_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    # What orders it (bot.updates.chat_key as text): the chat, else the user, else the update
    # alone. Processes sharing the bot claim the unanswered updates chat by chat (chat_claims).
    Column("chat_key", String(40)),
    partial_index(
        "ix_update_inbox_unanswered", "chat_key", "update_id", where="answered_at IS NULL"
    ),
)

# Several bot processes on one PostgreSQL (bot/shared.py). Times are the database's clock in
# seconds since the epoch, so that the processes' own clocks (other machines) do not matter.
# A chat whose unanswered updates one process answers, in update_id order, until `until`
# (renewed while it holds them; a dead process's chats are taken over once it has passed).
chat_claims = Table(
    "chat_claims",
    metadata,
    Column("chat_key", String(40), primary_key=True),
    Column("worker", String(120), nullable=False),
    Column("until", Float(precision=53), nullable=False),
)

# Work only one process does at a time ('poller': the getUpdates long poll), the same way.
worker_leases = Table(
    "worker_leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("worker", String(120), nullable=False),
    Column("until", Float(precision=53), nullable=False),
)

# The send pace shared by every process of the bot: the next free send slot of a pace
# ('replies', 'notices', 'chat:<id>'), handed out by one UPDATE ... RETURNING each.
send_pace = Table(
    "send_pace",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("next_at", Float(precision=53), nullable=False),
)

# Counters other processes read to know that what they cached is old: 'catalog' is moved by
# a trigger on products (PostgreSQL), so every writer moves it, whatever wrote.
store_versions = Table(
    "store_versions",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# Lines a change touched (a projected date moved, units allocated, shipped or cancelled, a new
# line, a chat linked to the customer) whose follow-on work has not run yet, once per stage
# that still owes them a look: 'delay' (the delay policy, store.delays) and 'notice' (the
# notice queueing, store.outbox). Written in the change's own transaction, taken and deleted
# in the batch that does the stage's work, so a crash between the two loses nothing and a
# batch never does a line twice. A line marked twice is one row per stage.
follow_on_marks = Table(
    "follow_on_marks",
    metadata,
    Column("stage", String(16), primary_key=True),
    Column("line_id", Integer, ForeignKey("order_lines.line_id"), primary_key=True),
)

# Durable cursors of the follow-on work, one row per stage. The stage has looked at every line
# below next_line_id at least once; lines at or above it (a store upgraded to the marks, or
# lines written without a mark, such as the demo's bulk load) are scanned in line_id ranges.
# Every batch of a stage begins by writing its row: on SQLite that first write takes the write
# lock before anything is read, on PostgreSQL the row lock puts the stage's batches of all
# processes one after another (the claim: no two processes take the same marks or range).
follow_on_cursors = Table(
    "follow_on_cursors",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("next_line_id", Integer, nullable=False),
    Column("batches", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", UTCDateTime),
)

# A SKU whose queue owes a projection (store.backorders): a change to its restocks, stock or
# queue bumps ``generation`` and puts the cursor back at the head of the queue in its own
# transaction; the projection's batches then walk the queue from the cursor (the queue key of
# the last line reached, the waiting units and lines up to it), each batch its own short
# transaction, until ``pending`` is false. Every batch begins by writing the row: the claim
# (SQLite's write lock; on PostgreSQL the row lock, taken with SKIP LOCKED), so no two batches
# walk one SKU at once, and a change waits for the batch in flight instead of racing it.
sku_projections = Table(
    "sku_projections",
    metadata,
    Column("sku", SKU, primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("pending", Boolean, nullable=False),
    Column("after_rank", Integer),
    Column("after_at", UTCDateTime),
    Column("after_line", Integer),
    Column("need_before", BigInteger, nullable=False),
    Column("lines_before", Integer, nullable=False),
    Column("moved", Integer, nullable=False),
    Column("batches", Integer, nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "pending", "requested_at"),
)

# A SKU whose free units are owed to its waiting lines (store.backorders): a receipt too big to
# allocate in its own transaction gives out the first lines' units and leaves the row; the
# allocation's batches go on from the head of the queue, each its own short transaction, and
# delete the row once no unit is free or no line waits. The free units and the waiting lines
# are themselves the durable state; the row only says where to look. A batch claims the row
# (SQLite's write lock; on PostgreSQL its row lock, with SKIP LOCKED) and holds the stock row,
# so no unit is given twice.
sku_allocations = Table(
    "sku_allocations",
    metadata,
    Column("sku", SKU, primary_key=True),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("batches", Integer, nullable=False),
)

# The Shopify adapter (shopapi/shopify.py). Each webhook delivery's X-Shopify-Webhook-Id, kept
# in the transaction that applied it: a replayed delivery inserts nothing and changes nothing.
shopify_webhooks = Table(
    "shopify_webhooks",
    metadata,
    Column("webhook_id", String(100), primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index(None, "received_at"),
)

# Shopify's order id -> the store's order number: a fulfillment names its order by the id.
shopify_orders = Table(
    "shopify_orders",
    metadata,
    Column("shopify_order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("order_number", ORDER_NUMBER, nullable=False),
)

# Shopify's inventory item -> SKU, learnt from products/create and products/update: an
# inventory level names only the item.
shopify_inventory_items = Table(
    "shopify_inventory_items",
    metadata,
    Column("inventory_item_id", BigInteger, primary_key=True, autoincrement=False),
    Column("sku", SKU, nullable=False),
)

# Shopify's "available" per item and location; the store's stock is one count per SKU.
shopify_inventory_levels = Table(
    "shopify_inventory_levels",
    metadata,
    Column("inventory_item_id", BigInteger, primary_key=True, autoincrement=False),
    Column("location_id", BigInteger, primary_key=True, autoincrement=False),
    Column("available", BigInteger, nullable=False),
)

# --- insights (#18): what the store learns from its own history -------------------------------

# Each supplier's and each SKU's track record, from restocks received and their date histories
# (store.insights): rewritten whole by refresh_records. enough: at least the minimum sample of
# deliveries, so the order view may state a range from slip_p80.
track_records = Table(
    "track_records",
    metadata,
    Column("scope", String(8), primary_key=True),  # 'supplier' | 'sku'
    Column("key", String(64), primary_key=True),
    Column("deliveries", Integer, nullable=False),
    Column("on_time", Integer, nullable=False),
    Column("moved", Integer, nullable=False),
    Column("slip_median", Integer, nullable=False),
    Column("slip_p80", Integer, nullable=False),
    Column("slip_worst", Integer, nullable=False),
    Column("lead_median", Integer),
    Column("enough", Boolean, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    CheckConstraint("scope IN ('supplier', 'sku')", name="scope_known"),
)

# Why lines wait, per SKU and the restock they wait for (restock_key '' when none): every
# waiting line of the pair has the same cause, so one row stands for all of them (1.7 million
# waiting lines in the 1M-order store are 31,000 pairs). Rewritten SKU range by SKU range.
wait_causes = Table(
    "wait_causes",
    metadata,
    Column("sku", SKU, primary_key=True),
    Column("restock_key", String(64), primary_key=True),
    Column("cause", String(24), nullable=False),
    Column("supplier_id", String(64)),
    Column("lines", Integer, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "cause IN ('no_restock', 'supplier_slip', 'demand_ahead', 'not_backorderable',"
        " 'on_schedule')",
        name="cause_known",
    ),
    Index(None, "cause"),
)

# Waiting lines by cause, one row per day and cause (the digest's chart).
cause_snapshots = Table(
    "cause_snapshots",
    metadata,
    Column("day", Date, primary_key=True),
    Column("cause", String(24), primary_key=True),
    Column("lines", Integer, nullable=False),
    Column("units", BigInteger, nullable=False),
)

# A SKU's own reorder point (units free below which the team is told); others use the default.
reorder_points = Table(
    "reorder_points",
    metadata,
    Column("sku", SKU, ForeignKey("products.sku"), primary_key=True),
    Column("point", Integer, nullable=False),
    CheckConstraint("point >= 0", name="point_nonneg"),
)

# Every condition the team is alerted about, by its key: told once while it holds; cleared
# when it ends, so that its return is told again.
ops_alerts = Table(
    "ops_alerts",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("data", Text, nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("told_at", UTCDateTime),
    Column("cleared_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "active", "told_at"),
)

# Small named values of the ops side: the ops topic's thread per support group, the last
# digest's day.
ops_state = Table(
    "ops_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Numbers the store hands out itself, one row per kind ('order_number': the orders the bot
# places, store.delays.next_order_number): one UPDATE takes the next, so two processes never
# get the same one (PostgreSQL's row lock, SQLite's single writer).
counters = Table(
    "counters",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

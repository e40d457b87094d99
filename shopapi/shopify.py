"""Shopify's webhooks onto the store: the same store operations, and the same rules for each
value, as the CSV imports (store.imports.parse_row), so there is one copy of both.

One path, POST /shopify/webhooks, reads the topic from X-Shopify-Topic. Each delivery is
checked in this order, and a refused one writes nothing:
- its body at most MAX_BODY bytes (413);
- X-Shopify-Hmac-Sha256, the base64 HMAC-SHA256 of the raw body under the app's secret,
  compared in constant time (401);
- a topic of TOPICS, an X-Shopify-Webhook-Id, a JSON object whose values pass the imports'
  rules (400, with the reason);
- then, in one transaction with the delivery's id in shopify_webhooks (a replay inserts no row
  and changes nothing), the store operation; a refusal of the store (an unknown SKU, an order
  that does not exist yet, more shipped than allocated) is 422 with the store's reason.
Shopify sends a delivery again until it gets a 2xx, so a webhook that came before the one it
needs (a fulfillment before its order) is applied when it comes again.

The mapping (also in the README):
- orders/create, and orders/updated of an order not seen yet: the customer by e-mail (a new
  customer gets the next free customer id), then place_order with the order's number
  (``order_number``, else ``name`` without its ``#``), one line per line item with a SKU, in
  Shopify's order, the unit price in minor units, placed at ``created_at``. The Shopify order
  id is kept (shopify_orders) for its fulfillments.
- orders/updated of a known order: line items whose ``current_quantity`` is 0 (removed by an
  order edit) are cancelled (cancel_line); with ``cancelled_at`` set, as orders/cancelled.
- orders/cancelled: cancel_order, the reason Shopify's ``cancel_reason``.
- fulfillments/create and fulfillments/update with status ``success``: ship, shipment id
  ``shopify-<fulfillment id>``, carrier ``tracking_company``, tracking number
  ``tracking_number``; units by SKU onto the order's lines with that SKU. A fulfillment seen
  before only takes a new carrier or tracking number. Other statuses change nothing.
- products/create and products/update: only the inventory item -> SKU map of each variant with
  a SKU (the catalog itself, with its names in four languages and alternatives, comes from
  products.csv or the API).
- inventory_levels/update: Shopify's ``available`` per location is kept; the SKU's stock on hand
  becomes the sum over its locations plus the units the store's open lines hold or wait for
  (Shopify's ``available`` has the unshipped ordered units taken off already), through
  set_stock as a stock count, never below what is allocated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web
from babel.numbers import get_currency_precision
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import NewLine, cancel_line, cancel_order, place_order, set_stock, ship
from store.db import Store
from store.errors import StoreError, db_reason, is_busy
from store.imports import MAX_CHARS, MAX_ID, MAX_QTY, RowError, parse_row, whole_number
from store.marks import insert_ignoring
from store.master import LANGUAGES, CustomerIn, upsert_customer
from store.schema import (
    customers,
    order_lines,
    orders,
    products,
    shipments,
    shopify_inventory_items,
    shopify_inventory_levels,
    shopify_orders,
    shopify_webhooks,
    stock,
    utcnow,
)

log = logging.getLogger(__name__)

PATH = "/shopify/webhooks"
# Shopify's largest order payloads (hundreds of line items) stay well under this.
MAX_BODY = 2 * 1024 * 1024
MAX_LINE_ITEMS = 1000  # store.imports.MAX_LINE_NO
MAX_SHOPIFY_ID = 2**63 - 1
TOPICS = (
    "orders/create",
    "orders/updated",
    "orders/cancelled",
    "fulfillments/create",
    "fulfillments/update",
    "products/create",
    "products/update",
    "inventory_levels/update",
)
# Customers created from Shopify take ids above the largest; on PostgreSQL this advisory lock
# puts two such creations one after the other (on SQLite the delivery's first write already
# holds the file's write lock).
_CUSTOMER_LOCK = 7_150_001


class BadPayload(ValueError):
    """The delivery cannot be read: 400 with this message, nothing written."""


class Ignored(Exception):
    """A well-formed delivery that holds nothing for the store (an order of gift cards only):
    200, and its id kept like any other."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "applied", "duplicate", "ignored"
    detail: str = ""
    changed: bool = False


def signature(secret: str, body: bytes) -> str:
    """X-Shopify-Hmac-Sha256 of ``body``: what Shopify sends, and what tests sign with."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verified(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    try:
        given = base64.b64decode(header.encode(), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


# --- reading a payload --------------------------------------------------------------------


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadPayload(f"{what}: expected a JSON object")
    return value


def _id(payload: dict[str, Any], key: str, what: str = "") -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHOPIFY_ID:
        raise BadPayload(f"{what}{key}: expected a positive whole number, got {value!r:.40}")
    return value


def _str(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"{key}: expected a string, got {value!r:.40}")
    return value.strip()


def _row(kind: str, row: dict[str, str], where: str = "", whole: tuple[str, ...] = ()) -> Any:
    """``row`` by the imports' rules; a problem is named with ``where`` before its column,
    except in the columns ``whole`` (the order's own, not the line item's)."""
    try:
        return parse_row(kind, row)
    except RowError as e:
        inside = not str(e).startswith(tuple(f"{col}:" for col in whole))
        raise BadPayload(f"{where if inside else ''}{e}") from None
    except KeyError as e:  # a column the kind does not have: a bug here, not in the payload
        raise AssertionError(f"no column {e} in {kind}") from None


def _order_number(order: dict[str, Any]) -> str:
    number = order.get("order_number")
    if isinstance(number, int) and not isinstance(number, bool):
        return str(number)
    return _str(order, "name").removeprefix("#")


def _minor(price: Any, currency: str, where: str) -> str:
    """Shopify's decimal price text ("199.00") in the currency's minor units, as the CSV's
    unit_price_minor column writes it."""
    try:
        digits = get_currency_precision(currency) if currency else 2
        amount = Decimal(str(price)) * 10**digits
    except (InvalidOperation, ValueError):
        raise BadPayload(f"{where}price: not a decimal amount: {price!r:.40}") from None
    if amount != amount.to_integral_value() or not amount.is_finite():
        raise BadPayload(f"{where}price: more decimals than {currency or 'the currency'} has")
    return str(int(amount))


@dataclass(frozen=True)
class OrderPlan:
    shopify_id: int
    number: str
    customer: CustomerIn  # customer_id is found or given in the transaction
    lines: tuple[NewLine, ...]
    placed_at: datetime
    removed: tuple[int, ...]  # line numbers whose current_quantity is 0
    cancelled: bool
    cancel_reason: str


def read_order(order: dict[str, Any]) -> OrderPlan:
    shopify_id = _id(order, "id")
    number = _order_number(order)
    currency = _str(order, "currency").upper()
    customer = order.get("customer")
    customer = _obj(customer, "customer") if customer is not None else {}
    email = _str(customer, "email") or _str(order, "email") or _str(order, "contact_email")
    if not email:
        raise BadPayload("email: the order has no e-mail address (customers are found by it)")
    address = order.get("shipping_address") or order.get("billing_address") or {}
    address = _obj(address, "shipping_address")
    default = _obj(customer.get("default_address") or {}, "customer.default_address")
    name = " ".join(
        part for part in (_str(customer, "first_name"), _str(customer, "last_name")) if part
    ) or (" ".join(p for p in (_str(address, "first_name"), _str(address, "last_name")) if p))
    locale = (_str(order, "customer_locale") or "en")[:2].lower()
    person: CustomerIn = _row(
        "customers",
        {
            "customer_id": "1",
            "name": name or email.rpartition("@")[0],
            "email": email,
            "phone": _str(customer, "phone") or _str(order, "phone") or _str(address, "phone"),
            "postcode": _str(address, "zip") or _str(default, "zip"),
            "language": locale if locale in LANGUAGES else "en",
        },
        "customer.",
    )
    items = order.get("line_items")
    if not isinstance(items, list) or not items:
        raise BadPayload("line_items: expected a list with at least one line item")
    if len(items) > MAX_LINE_ITEMS:
        raise BadPayload(f"line_items: more than {MAX_LINE_ITEMS}")
    lines: list[NewLine] = []
    removed: list[int] = []
    placed_at: datetime | None = None
    for i, raw in enumerate(items):
        item = _obj(raw, f"line_items[{i}]")
        sku = _str(item, "sku")
        if not sku:
            continue  # a gift card, a tip, a custom item: nothing the store keeps
        where = f"line_items[{i}]."
        qty = item.get("quantity")
        record = _row(
            "orders",
            {
                "order_number": number,
                "customer_id": "1",
                "placed_at": _str(order, "created_at"),
                "line_no": str(len(lines) + 1),
                "sku": sku,
                "qty": str(qty)
                if isinstance(qty, int) and not isinstance(qty, bool)
                else json.dumps(qty),
                "unit_price_minor": _minor(item.get("price", "0"), currency, where),
            },
            where,
            whole=("order_number", "placed_at"),
        )
        _, head, line_no, line = record
        placed_at = head[1]
        lines.append(line)
        if item.get("current_quantity") == 0:
            removed.append(line_no)
    if not lines or placed_at is None:
        raise Ignored("no line item has a SKU")
    return OrderPlan(
        shopify_id,
        number,
        person,
        tuple(lines),
        placed_at,
        tuple(removed),
        order.get("cancelled_at") is not None,
        _str(order, "cancel_reason")[:500] or "cancelled in Shopify",
    )


@dataclass(frozen=True)
class FulfillmentPlan:
    shipment_id: str
    shopify_order_id: int
    shipped: bool
    carrier: str
    tracking: str | None
    shipped_on: date
    units: tuple[tuple[str, int], ...]  # (SKU, quantity) in the fulfillment's order


def read_fulfillment(f: dict[str, Any]) -> FulfillmentPlan:
    fid = _id(f, "id")
    order_id = _id(f, "order_id")
    carrier = _str(f, "tracking_company") or "unknown"
    tracking = _str(f, "tracking_number") or None
    for col, limit, value in (
        ("tracking_company", 64, carrier),
        ("tracking_number", 100, tracking),
    ):
        if value is not None and len(value) > limit:
            raise BadPayload(f"{col}: longer than {limit} characters ({len(value)})")
    when = _str(f, "created_at")
    shipped_on = utcnow().date()
    if when:
        try:
            shipped_on = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(UTC).date()
        except ValueError:
            raise BadPayload(f"created_at: not a date and time: {when!r:.40}") from None
    items = f.get("line_items")
    if not isinstance(items, list) or len(items) > MAX_LINE_ITEMS:
        raise BadPayload(f"line_items: expected a list of at most {MAX_LINE_ITEMS} items")
    units: list[tuple[str, int]] = []
    for i, raw in enumerate(items):
        item = _obj(raw, f"line_items[{i}]")
        sku = _str(item, "sku")
        if not sku:
            continue
        if len(sku) > MAX_CHARS["sku"]:
            raise BadPayload(f"line_items[{i}].sku: longer than {MAX_CHARS['sku']} characters")
        qty = item.get("quantity")
        try:
            units.append((sku.upper(), whole_number(str(qty), "quantity", 1, MAX_QTY)))
        except RowError as e:
            raise BadPayload(f"line_items[{i}].{e}") from None
    return FulfillmentPlan(
        f"shopify-{fid}",
        order_id,
        _str(f, "status") == "success",
        carrier,
        tracking,
        shipped_on,
        tuple(units),
    )


def read_product(p: dict[str, Any]) -> list[tuple[int, str]]:
    """(inventory item id, SKU) of each variant with a SKU."""
    _id(p, "id")
    variants = p.get("variants")
    if not isinstance(variants, list):
        raise BadPayload("variants: expected a list")
    pairs = []
    for i, raw in enumerate(variants):
        v = _obj(raw, f"variants[{i}]")
        sku = _str(v, "sku")
        if not sku or v.get("inventory_item_id") is None:
            continue
        if len(sku) > MAX_CHARS["sku"]:
            raise BadPayload(f"variants[{i}].sku: longer than {MAX_CHARS['sku']} characters")
        pairs.append((_id(v, "inventory_item_id", f"variants[{i}]."), sku.upper()))
    return pairs


def read_level(level: dict[str, Any]) -> tuple[int, int, int | None]:
    item = _id(level, "inventory_item_id")
    location = _id(level, "location_id")
    available = level.get("available")
    if available is None:  # the item's inventory is not tracked
        return item, location, None
    if isinstance(available, bool) or not isinstance(available, int):
        raise BadPayload(f"available: expected a whole number, got {available!r:.40}")
    if not -MAX_QTY <= available <= MAX_QTY:
        raise BadPayload(f"available: must be from {-MAX_QTY:,} to {MAX_QTY:,}, got {available}")
    return item, location, available


# --- applying it ----------------------------------------------------------------------------


async def _customer_id(conn: AsyncConnection, c: CustomerIn) -> int:
    """The customer with this e-mail address (the lowest id if several), else a new one."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CUSTOMER_LOCK})
    found = await conn.scalar(
        select(func.min(customers.c.customer_id)).where(
            func.lower(customers.c.email) == c.email.lower()
        )
    )
    if found is not None:
        return int(found)
    new_id = int(await conn.scalar(select(func.max(customers.c.customer_id))) or 0) + 1
    if new_id > MAX_ID:
        raise StoreError("no customer id left for a new customer")
    await upsert_customer(conn, replace(c, customer_id=new_id))
    return new_id


async def _order_number_of(conn: AsyncConnection, shopify_id: int) -> str | None:
    return await conn.scalar(
        select(shopify_orders.c.order_number).where(shopify_orders.c.shopify_order_id == shopify_id)
    )


async def _place(conn: AsyncConnection, plan: OrderPlan) -> Outcome:
    known = await conn.scalar(select(orders.c.order_id).where(orders.c.order_number == plan.number))
    if known is None:
        cid = await _customer_id(conn, plan.customer)
        await place_order(conn, plan.number, cid, plan.lines, placed_at=plan.placed_at)
        changed = True
    else:
        changed = False
    await conn.execute(
        insert_ignoring(conn, shopify_orders).values(
            shopify_order_id=plan.shopify_id, order_number=plan.number
        )
    )
    if plan.cancelled:
        c = await cancel_order(conn, plan.number, reason=plan.cancel_reason)
        changed = changed or c.changed
    for line_no in plan.removed:
        c = await cancel_line(conn, plan.number, line_no, reason="removed in Shopify")
        changed = changed or c.changed
    return Outcome("applied", f"order {plan.number}", changed)


async def _cancel(conn: AsyncConnection, plan: OrderPlan) -> Outcome:
    c = await cancel_order(conn, plan.number, reason=plan.cancel_reason)
    return Outcome("applied", f"order {plan.number}", c.changed)


async def _fulfil(conn: AsyncConnection, plan: FulfillmentPlan) -> Outcome:
    if not plan.shipped:
        return Outcome("ignored", "fulfillment status is not success")
    number = await _order_number_of(conn, plan.shopify_order_id)
    if number is None:
        raise StoreError(f"no order with Shopify id {plan.shopify_order_id} (not received yet?)")
    have = (
        await conn.execute(
            select(shipments.c.carrier, shipments.c.tracking_number).where(
                shipments.c.shipment_id == plan.shipment_id
            )
        )
    ).first()
    if have is not None:
        # Shopify often adds the tracking number in an update after the fulfillment.
        if (have.carrier, have.tracking_number) == (plan.carrier, plan.tracking):
            return Outcome("applied", f"{plan.shipment_id}: already recorded")
        await conn.execute(
            update(shipments)
            .where(shipments.c.shipment_id == plan.shipment_id)
            .values(carrier=plan.carrier, tracking_number=plan.tracking)
        )
        return Outcome("applied", f"{plan.shipment_id}: tracking updated", True)
    ol = order_lines.c
    rows = (
        await conn.execute(
            select(ol.line_no, ol.sku, ol.qty_allocated)
            .select_from(order_lines.join(orders, orders.c.order_id == ol.order_id))
            .where(orders.c.order_number == number)
            .order_by(ol.line_no)
        )
    ).all()
    lines: dict[int, int] = {}
    for sku, qty in plan.units:
        left = qty
        same = [r for r in rows if r.sku == sku]
        if not same:
            raise StoreError(f"order {number} has no line with SKU {sku}")
        for r in same:
            take = min(left, int(r.qty_allocated) - lines.get(int(r.line_no), 0))
            if take > 0:
                lines[int(r.line_no)] = lines.get(int(r.line_no), 0) + take
                left -= take
        if left:
            # More than allocated: ship says so in its words (nothing written).
            last = int(same[-1].line_no)
            lines[last] = lines.get(last, 0) + left
    if not lines:
        return Outcome("ignored", "no line item with a SKU")
    await ship(
        conn,
        plan.shipment_id,
        number,
        carrier=plan.carrier,
        tracking_number=plan.tracking,
        shipped_on=plan.shipped_on,
        lines=lines,
    )
    return Outcome("applied", f"{plan.shipment_id}: shipped", True)


async def _map_items(conn: AsyncConnection, pairs: list[tuple[int, str]]) -> Outcome:
    changed = False
    for item, sku in pairs:
        have = await conn.scalar(
            select(shopify_inventory_items.c.sku).where(
                shopify_inventory_items.c.inventory_item_id == item
            )
        )
        if have == sku:
            continue
        await conn.execute(
            insert_ignoring(conn, shopify_inventory_items).values(inventory_item_id=item, sku=sku)
        )
        await conn.execute(
            update(shopify_inventory_items)
            .where(shopify_inventory_items.c.inventory_item_id == item)
            .values(sku=sku)
        )
        changed = True
    return Outcome("applied", f"{len(pairs)} inventory items", changed)


async def _level(conn: AsyncConnection, item: int, location: int, available: int | None) -> Outcome:
    if available is None:
        return Outcome("ignored", "inventory not tracked")
    sku = await conn.scalar(
        select(shopify_inventory_items.c.sku).where(
            shopify_inventory_items.c.inventory_item_id == item
        )
    )
    if sku is None:
        raise StoreError(f"inventory item {item} has no SKU yet (products/create not received?)")
    lv = shopify_inventory_levels.c
    # Insert-if-absent, then set: two deliveries for one new level at once cannot both insert.
    await conn.execute(
        insert_ignoring(conn, shopify_inventory_levels).values(
            inventory_item_id=item, location_id=location, available=available
        )
    )
    await conn.execute(
        update(shopify_inventory_levels)
        .where(lv.inventory_item_id == item, lv.location_id == location)
        .values(available=available)
    )
    total = int(
        await conn.scalar(
            select(func.coalesce(func.sum(lv.available), 0))
            .select_from(
                shopify_inventory_levels.join(
                    shopify_inventory_items,
                    shopify_inventory_items.c.inventory_item_id == lv.inventory_item_id,
                )
            )
            .where(shopify_inventory_items.c.sku == sku)
        )
        or 0
    )
    ol = order_lines.c
    held = int(
        await conn.scalar(
            select(func.coalesce(func.sum(ol.qty_allocated + ol.qty_waiting), 0)).where(
                ol.sku == sku
            )
        )
        or 0
    )
    if await conn.scalar(select(products.c.sku).where(products.c.sku == sku)) is None:
        raise StoreError(f"unknown SKU {sku}")
    allocated = int(await conn.scalar(select(stock.c.allocated).where(stock.c.sku == sku)) or 0)
    on_hand = max(total + held, allocated)
    if on_hand != total + held:
        log.warning(
            "shopify: %s: available %s leaves fewer units than the %s allocated; kept %s",
            sku,
            total,
            allocated,
            on_hand,
        )
    _, on_hand = _row("stock", {"sku": sku, "on_hand": str(on_hand)})
    before = await conn.scalar(select(stock.c.on_hand).where(stock.c.sku == sku))
    await set_stock(conn, sku, on_hand)
    return Outcome("applied", f"{sku}: {on_hand} on hand", before != on_hand)


Apply = Callable[[AsyncConnection], Awaitable[Outcome]]


def plan(topic: str, payload: dict[str, Any]) -> Apply:
    """Read the payload now (BadPayload), and return what to do with it in the transaction."""
    try:
        return _plan(topic, payload)
    except Ignored as e:
        reason = str(e)

        async def ignored(conn: AsyncConnection) -> Outcome:
            return Outcome("ignored", reason)

        return ignored


def _plan(topic: str, payload: dict[str, Any]) -> Apply:
    if topic in ("orders/create", "orders/updated"):
        order = read_order(payload)
        return lambda conn: _place(conn, order)
    if topic == "orders/cancelled":
        order = read_order(payload)
        return lambda conn: _cancel(conn, order)
    if topic in ("fulfillments/create", "fulfillments/update"):
        fulfillment = read_fulfillment(payload)
        return lambda conn: _fulfil(conn, fulfillment)
    if topic in ("products/create", "products/update"):
        pairs = read_product(payload)
        return lambda conn: _map_items(conn, pairs)
    if topic == "inventory_levels/update":
        item, location, available = read_level(payload)
        return lambda conn: _level(conn, item, location, available)
    raise BadPayload(f"X-Shopify-Topic: not a topic this endpoint takes: {topic!r:.60}")


async def apply_webhook(store: Store, webhook_id: str, topic: str, apply: Apply) -> Outcome:
    """The delivery in one transaction with its id: a replay inserts no id and does nothing."""
    async with store.begin() as conn:
        first = await conn.execute(
            insert_ignoring(conn, shopify_webhooks)
            .values(webhook_id=webhook_id, topic=topic, received_at=utcnow())
            .returning(shopify_webhooks.c.webhook_id)
        )
        if first.first() is None:
            return Outcome("duplicate", "this webhook id was applied before")
        return await apply(conn)


class FollowOnRunner:
    """The follow-on after changes, in the background and coalesced: Shopify wants its answer
    within seconds, and a burst of webhooks owes one run, not one each. A change asks for a run
    (`poke`); a run already going runs once more after it ends, never two at once. What a run
    would do is in the store's marks already, so a crash before it loses nothing (the next
    command or the bot's notice job does it)."""

    def __init__(self, follow_on: Callable[[], Awaitable[None]]) -> None:
        self._follow_on = follow_on
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def poke(self) -> None:
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._again:
            self._again = False
            self.runs += 1
            try:
                await self._follow_on()
            except Exception:
                log.exception("shopify: the follow-on after a webhook failed")

    async def idle(self) -> None:
        """Until no run is going or asked for (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


FOLLOW_ON = web.AppKey("shopify_follow_on", FollowOnRunner)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def add_shopify_routes(
    app: web.Application,
    *,
    store: Store,
    secret: str,
    follow_on: Callable[[], Awaitable[None]],
) -> None:
    """POST /shopify/webhooks on ``app``. ``follow_on`` runs after a change is committed (the
    delay policy and notices, as after an import: store.cli.follow_on), in the background
    (`FollowOnRunner`, at ``app[FOLLOW_ON]``)."""
    if not secret:
        raise ValueError("add_shopify_routes needs SHOPIFY_WEBHOOK_SECRET")
    runner = app[FOLLOW_ON] = FollowOnRunner(follow_on)

    async def finish(app: web.Application) -> None:
        await runner.idle()

    app.on_cleanup.append(finish)

    async def webhook(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY:,} bytes")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY:,} bytes")
        if not verified(secret, body, request.headers.get("X-Shopify-Hmac-Sha256")):
            log.warning("shopify: a webhook with a missing or wrong signature, refused")
            return _error(401, "X-Shopify-Hmac-Sha256: missing or wrong")
        topic = request.headers.get("X-Shopify-Topic", "")
        webhook_id = request.headers.get("X-Shopify-Webhook-Id", "").strip()
        try:
            if not webhook_id or len(webhook_id) > 100:
                raise BadPayload("X-Shopify-Webhook-Id: missing or longer than 100 characters")
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):
                raise BadPayload("the body is not JSON") from None
            apply = plan(topic, _obj(payload, "the body"))
        except BadPayload as e:
            log.warning("shopify: %s webhook refused: %s", topic[:40], e)
            return _error(400, str(e))
        try:
            outcome = await apply_webhook(store, webhook_id, topic, apply)
        except StoreError as e:
            log.warning("shopify: %s webhook not applied: %s", topic, e)
            return _error(422, str(e))
        except DBAPIError as e:
            if is_busy(e):
                return _error(503, "the store is busy; send again")
            log.warning("shopify: %s webhook refused by the store: %s", topic, db_reason(e))
            return _error(422, f"the store refused it: {db_reason(e)}")
        log.info("shopify: %s %s: %s %s", topic, webhook_id, outcome.status, outcome.detail)
        if outcome.changed:
            runner.poke()
        return web.json_response(
            {"status": outcome.status, "detail": outcome.detail, "changed": outcome.changed}
        )

    app.router.add_post(PATH, webhook)


def store_follow_on(store: Store) -> Callable[[], Awaitable[None]]:
    """The follow-on the admin commands run after a change (store.cli.follow_on), with the
    settings read once here."""
    from store.cli import follow_on, follow_on_settings

    settings = follow_on_settings()

    async def run() -> None:
        await follow_on(store, settings, show=False)

    return run


__all__ = [
    "FOLLOW_ON",
    "MAX_BODY",
    "PATH",
    "TOPICS",
    "BadPayload",
    "FollowOnRunner",
    "add_shopify_routes",
    "apply_webhook",
    "signature",
    "store_follow_on",
    "verified",
]

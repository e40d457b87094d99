"""The requests and answers of the API, as pydantic models: they validate each request and
they are the OpenAPI document's schemas (``shopapi.openapi``), so the two cannot drift.

Bounds and checks are the CSV imports' own (store/imports.py, docs/csv-formats.md): the same
constants, the same control-character, e-mail, date and date-time checks with the same
messages. Dates are checked against the request's clock, passed in the validation context
(``{"now": aware datetime}``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from store.imports import (
    _DATETIME_RE,
    CLOCK_SKEW,
    MAX_ALTERNATIVES,
    MAX_CHARS,
    MAX_CHARS_OF_KIND,
    MAX_ID,
    MAX_LEAD_DAYS,
    MAX_LINE_NO,
    MAX_MINOR_UNITS,
    MAX_PRIORITY,
    MAX_QTY,
    ORDER_NUMBER_DIGITS,
    YEARS_AHEAD,
    YEARS_BACK,
    RowError,
    _email,
    check_field,
    iso_date,
)
from store.master import LANGUAGES

# Items in one request's list (orders, products, ...): a shop system sends its changes in
# batches; a bigger one is a mistake or an attack, and it would hold the store's write lock.
MAX_ITEMS = 1000
# What the admin commands take as free text (store/cli.py MAX_ARG_CHARS).
MAX_REASON = 500
MAX_SHIPMENT_ID = 64
MAX_CARRIER = 64
MAX_TRACKING = 100

# The characters check_field refuses, for the schema (generated requests then mostly pass).
_NO_CONTROLS = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"


def _now(info: ValidationInfo) -> datetime:
    now = (info.context or {}).get("now")
    return now if isinstance(now, datetime) else datetime.now(UTC)


def _controls(col: str, limit: int) -> Any:
    def check(value: object) -> object:
        if isinstance(value, str):
            try:
                check_field(col, value, limit)
            except RowError as e:
                raise ValueError(str(e).removeprefix(f"{col}: ")) from None
        return value

    return BeforeValidator(check)


def Text(col: str, limit: int, *, min_length: int = 1) -> Any:
    """A one-line text field as the imports take it: no control characters, trimmed, at
    most ``limit`` characters."""
    return Annotated[
        str,
        _controls(col, limit),
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=limit),
        Field(json_schema_extra={"pattern": _NO_CONTROLS}),
    ]


def _upper(value: str) -> str:
    return value.upper()


def _text_rules(col: str, limit: int, min_length: int = 1) -> tuple[Any, Any, Any]:
    return (
        _controls(col, limit),
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=limit),
        Field(json_schema_extra={"pattern": _NO_CONTROLS}),
    )


_SKU = _text_rules("sku", MAX_CHARS["sku"])
Sku = Annotated[str, _SKU[0], _SKU[1], _SKU[2], AfterValidator(_upper)]


def _order_number(value: object) -> object:
    low, high = ORDER_NUMBER_DIGITS
    if isinstance(value, str) and not re.fullmatch("[0-9]{%d,%d}" % (low, high), value):  # noqa: UP031
        raise ValueError(
            f"{low} to {high} ASCII digits (what the bot reads in a message): {value[:40]!r}"
        )
    return value


OrderNumber = Annotated[
    str,
    BeforeValidator(_order_number),
    Field(json_schema_extra={"pattern": "^[0-9]{%d,%d}$" % ORDER_NUMBER_DIGITS}),  # noqa: UP031
]


def _email_check(value: str) -> str:
    try:
        return _email(value)
    except RowError as e:
        raise ValueError(str(e).removeprefix("email: ")) from None


_EMAIL = _text_rules("email", MAX_CHARS["email"])
Email = Annotated[str, _EMAIL[0], _EMAIL[1], _EMAIL[2], AfterValidator(_email_check)]
_SUPPLIER_EMAIL = _text_rules("email", MAX_CHARS_OF_KIND[("suppliers", "email")])
SupplierEmail = Annotated[
    str, _SUPPLIER_EMAIL[0], _SUPPLIER_EMAIL[1], _SUPPLIER_EMAIL[2], AfterValidator(_email_check)
]


def Whole(lo: int, hi: int) -> Any:
    return Annotated[int, Field(ge=lo, le=hi, strict=True)]


def _date_in_window(col: str, *, back: int, ahead: Any) -> Any:
    def parse(value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            raise ValueError("not an ISO date (YYYY-MM-DD)")
        try:
            return iso_date(value, col, _now(info).date(), back=back, ahead=ahead)
        except RowError as e:
            raise ValueError(str(e).removeprefix(f"{col}: ")) from None

    return parse


def Day(col: str, *, ahead: Any = YEARS_AHEAD) -> Any:
    return Annotated[
        date,
        BeforeValidator(_date_in_window(col, back=YEARS_BACK, ahead=ahead)),
        WithJsonSchema({"type": "string", "format": "date"}),
    ]


def _placed_at(value: object, info: ValidationInfo) -> object:
    # store.imports._datetime's rule, on the request's clock.
    if not isinstance(value, str) or not _DATETIME_RE.fullmatch(value):
        raise ValueError("not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM)")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM)") from None
    now = _now(info)
    try:
        # Only the window back: ahead, the clock's own rule below.
        iso_date(at.date().isoformat(), "placed_at", now.date(), back=YEARS_BACK, ahead=_FAR_AHEAD)
    except RowError as e:
        raise ValueError(str(e).removeprefix("placed_at: ")) from None
    if at > now + CLOCK_SKEW:
        raise ValueError(f"in the future (more than a day ahead of this clock): {value!r}")
    return at


_FAR_AHEAD = timedelta(days=100 * 366)

PlacedAt = Annotated[
    datetime, BeforeValidator(_placed_at), WithJsonSchema({"type": "string", "format": "date-time"})
]


def _currency(value: str) -> str:
    if not re.fullmatch("[A-Z]{3}", value.upper()):
        raise ValueError(f"not a 3-letter code: {value[:40]!r}")
    return value.upper()


Currency = Annotated[
    str,
    _controls("currency", MAX_CHARS["currency"]),
    StringConstraints(strip_whitespace=True),
    AfterValidator(_currency),
    Field(json_schema_extra={"pattern": "^[A-Za-z]{3}$"}),
]


class Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _unique(items: list[Any], key: str, where: str) -> list[Any]:
    """The imports' rule for an id that comes twice in one file: the same content is taken
    once, different content is an error."""
    first: dict[Any, int] = {}
    kept: list[Any] = []
    for i, item in enumerate(items):
        k = getattr(item, key)
        if k in first:
            if items[first[k]] != item:
                raise ValueError(
                    f"{where}[{i}]: duplicate id {k} with different content"
                    f" (first at {where}[{first[k]}])"
                )
            continue
        first[k] = i
        kept.append(item)
    return kept


def Items(item: type, *, max_items: int = MAX_ITEMS) -> Any:
    return Annotated[list[item], Field(min_length=1, max_length=max_items)]  # type: ignore[valid-type]


# --- products, suppliers, stock ---------------------------------------------------------


class Product(Model):
    sku: Sku
    name_en: Text("name_en", MAX_CHARS["name_en"])  # type: ignore[valid-type]
    name_de: Text("name_de", MAX_CHARS["name_de"]) | None = None  # type: ignore[valid-type]
    name_es: Text("name_es", MAX_CHARS["name_es"]) | None = None  # type: ignore[valid-type]
    name_ru: Text("name_ru", MAX_CHARS["name_ru"]) | None = None  # type: ignore[valid-type]
    category: Text("category", MAX_CHARS["category"])  # type: ignore[valid-type]
    price_minor: Whole(0, MAX_MINOR_UNITS)  # type: ignore[valid-type]
    currency: Currency
    active: bool = True
    backorderable: bool = True
    # None: the alternatives stay as they are; a list (also empty) replaces them.
    alternatives: Annotated[list[Sku], Field(max_length=MAX_ALTERNATIVES)] | None = None


class ProductsIn(Model):
    products: Items(Product)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ids(self) -> ProductsIn:
        object.__setattr__(self, "products", _unique(self.products, "sku", "products"))
        return self


class Supplier(Model):
    supplier_id: Text("supplier_id", MAX_CHARS["supplier_id"])  # type: ignore[valid-type]
    name: Text("name", MAX_CHARS["name"])  # type: ignore[valid-type]
    email: SupplierEmail | None = None
    lead_days: Whole(0, MAX_LEAD_DAYS) | None = None  # type: ignore[valid-type]


class SuppliersIn(Model):
    suppliers: Items(Supplier)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ids(self) -> SuppliersIn:
        object.__setattr__(self, "suppliers", _unique(self.suppliers, "supplier_id", "suppliers"))
        return self


class StockCount(Model):
    sku: Sku
    on_hand: Whole(0, MAX_QTY)  # type: ignore[valid-type]


class StockIn(Model):
    counts: Items(StockCount)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ids(self) -> StockIn:
        object.__setattr__(self, "counts", _unique(self.counts, "sku", "counts"))
        return self


# --- restocks ---------------------------------------------------------------------------

RestockId = Text("restock_id", MAX_CHARS["restock_id"])


class Restock(Model):
    restock_id: RestockId  # type: ignore[valid-type]
    supplier_id: Text("supplier_id", MAX_CHARS["supplier_id"])  # type: ignore[valid-type]
    sku: Sku
    qty: Whole(1, MAX_QTY)  # type: ignore[valid-type]
    expected_date: Day("expected_date")  # type: ignore[valid-type]


class RestocksIn(Model):
    restocks: Items(Restock)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ids(self) -> RestocksIn:
        object.__setattr__(self, "restocks", _unique(self.restocks, "restock_id", "restocks"))
        return self


class RestockDateIn(Model):
    expected_date: Day("expected_date")  # type: ignore[valid-type]
    reason: Text("reason", MAX_REASON)  # type: ignore[valid-type]


class ReceiveIn(Model):
    # None: the quantity ordered.
    qty: Whole(0, MAX_QTY) | None = None  # type: ignore[valid-type]


class CancelIn(Model):
    reason: Text("reason", MAX_REASON, min_length=0) = ""  # type: ignore[valid-type]


class RestockPath(Model):
    restock_id: RestockId  # type: ignore[valid-type]


# --- customers --------------------------------------------------------------------------


class Customer(Model):
    customer_id: Whole(1, MAX_ID)  # type: ignore[valid-type]
    name: Text("name", MAX_CHARS["name"])  # type: ignore[valid-type]
    email: Email
    phone: Text("phone", MAX_CHARS["phone"]) | None = None  # type: ignore[valid-type]
    postcode: Text("postcode", MAX_CHARS["postcode"]) | None = None  # type: ignore[valid-type]
    language: Literal["en", "de", "es", "ru"] = "en"


assert set(LANGUAGES) == {"en", "de", "es", "ru"}


class CustomersIn(Model):
    customers: Items(Customer)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ids(self) -> CustomersIn:
        object.__setattr__(self, "customers", _unique(self.customers, "customer_id", "customers"))
        return self


# --- orders -----------------------------------------------------------------------------


class OrderLine(Model):
    sku: Sku
    qty: Whole(1, MAX_QTY)  # type: ignore[valid-type]
    # None: the catalog price.
    unit_price_minor: Whole(0, MAX_MINOR_UNITS) | None = None  # type: ignore[valid-type]


class Order(Model):
    order_number: OrderNumber
    customer_id: Whole(1, MAX_ID)  # type: ignore[valid-type]
    placed_at: PlacedAt
    priority: Whole(-MAX_PRIORITY, MAX_PRIORITY) = 0  # type: ignore[valid-type]
    # Line numbers are the places in this list, from 1.
    lines: Items(OrderLine, max_items=MAX_LINE_NO)  # type: ignore[valid-type]


class OrdersIn(Model):
    orders: Items(Order)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ids(self) -> OrdersIn:
        object.__setattr__(self, "orders", _unique(self.orders, "order_number", "orders"))
        return self


class OrderPath(Model):
    order_number: OrderNumber


class OrderLinePath(Model):
    order_number: OrderNumber
    line_no: Whole(1, MAX_LINE_NO)  # type: ignore[valid-type]


class ShipLine(Model):
    line_no: Whole(1, MAX_LINE_NO)  # type: ignore[valid-type]
    qty: Whole(1, MAX_QTY)  # type: ignore[valid-type]


class ShipmentIn(Model):
    shipment_id: Text("shipment_id", MAX_SHIPMENT_ID)  # type: ignore[valid-type]
    carrier: Text("carrier", MAX_CARRIER)  # type: ignore[valid-type]
    tracking_number: Text("tracking_number", MAX_TRACKING) | None = None  # type: ignore[valid-type]
    # None: today in the shop's time zone.
    shipped_on: Day("shipped_on", ahead=CLOCK_SKEW) | None = None  # type: ignore[valid-type]
    # None: every allocated unit of the order.
    lines: Items(ShipLine, max_items=MAX_LINE_NO) | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _lines_once(self) -> ShipmentIn:
        seen: set[int] = set()
        for i, line in enumerate(self.lines or ()):
            if line.line_no in seen:
                raise ValueError(f"lines[{i}]: line {line.line_no} is given twice")
            seen.add(line.line_no)
        return self


# --- deep links -------------------------------------------------------------------------


class LinkIn(Model):
    """Exactly one of customer_id and order_number."""

    customer_id: Whole(1, MAX_ID) | None = None  # type: ignore[valid-type]
    order_number: OrderNumber | None = None
    # None: LINK_CODE_DAYS.
    days: Whole(1, 365) | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_target(self) -> LinkIn:
        if (self.customer_id is None) == (self.order_number is None):
            raise ValueError("give exactly one of customer_id and order_number")
        return self


# --- answers ----------------------------------------------------------------------------


class FieldError(Model):
    field: str
    message: str


class Errors(Model):
    errors: list[FieldError]


class Applied(Model):
    """A batch: how many items it held (after identical repeats), how many changed the store."""

    received: int
    changed: int


class RestockDateOut(Model):
    restock_id: str
    changed: bool
    lines_moved: int


class ReceiptOut(Model):
    restock_id: str
    changed: bool
    qty: int
    allocated: int
    to_free_stock: int


class RestockCancelOut(Model):
    restock_id: str
    changed: bool


class CancellationOut(Model):
    order_number: str
    changed: bool
    cancelled_qty: int


class ShipmentOut(Model):
    shipment_id: str
    changed: bool
    units: int


class LinkOut(Model):
    url: str
    code: str
    expires_at: datetime

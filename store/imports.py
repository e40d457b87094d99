"""CSV imports: every row checked first, then the whole file applied in one transaction.

A file with any bad row writes nothing; each problem is reported as ``file:line: reason``.
Formats and every rule checked here: docs/csv-formats.md.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import (
    NewLine,
    OrderIn,
    OrdersPlan,
    place_order,
    place_orders,
    plan_orders,
    set_stock,
)
from store.catalog import normalize_sku, product_by_sku
from store.errors import StoreError, db_reason, is_busy
from store.master import (
    LANGUAGES,
    CustomerIn,
    ProductIn,
    add_restock,
    set_alternatives,
    upsert_customer,
    upsert_product,
    upsert_supplier,
)

KINDS = ("products", "suppliers", "stock", "restocks", "customers", "orders")

COLUMNS: dict[str, tuple[list[str], list[str]]] = {  # kind -> (required, optional)
    "products": (
        ["sku", "name_en", "category", "price_minor", "currency"],
        ["name_de", "name_es", "name_ru", "active", "backorderable", "alternatives"],
    ),
    "suppliers": (["supplier_id", "name"], ["email", "lead_days"]),
    "stock": (["sku", "on_hand"], []),
    "restocks": (["restock_id", "supplier_id", "sku", "qty", "expected_date"], []),
    "customers": (["customer_id", "name", "email"], ["phone", "postcode", "language"]),
    "orders": (
        ["order_number", "customer_id", "placed_at", "line_no", "sku", "qty"],
        ["priority", "unit_price_minor"],
    ),
}

# Longest value per column, in characters. Text columns hold what the store's column holds
# (store/schema.py: PostgreSQL refuses more, SQLite would keep it silently); the others hold
# room for a value their own check refuses with a better reason (2^64 is out of range, not
# too long), and a megabyte of digits is refused by length before it is read as a number.
MAX_CHARS: dict[str, int] = {
    "sku": 32,
    "name_en": 200,
    "name_de": 200,
    "name_es": 200,
    "name_ru": 200,
    "category": 64,
    "price_minor": 20,
    "unit_price_minor": 20,
    "currency": 8,
    "active": 8,
    "backorderable": 8,
    "alternatives": 20 * 33,
    "supplier_id": 64,
    "name": 200,
    "email": 254,  # RFC 5321's longest address; suppliers' column holds 200 (below)
    "lead_days": 20,
    "on_hand": 20,
    "restock_id": 64,
    "qty": 20,
    "expected_date": 35,
    "customer_id": 20,
    "phone": 40,
    "postcode": 20,
    "language": 8,
    "order_number": 32,
    "placed_at": 35,
    "line_no": 20,
    "priority": 20,
}
MAX_CHARS_OF_KIND: dict[tuple[str, str], int] = {("suppliers", "email"): 200}
# A physical line, in bytes: a product row with four names of 200 Cyrillic letters (two bytes
# each) and 20 alternatives is under 3,000. Also bounds a quoted field that runs over lines.
MAX_LINE_BYTES = 8192
# A file that is wrong throughout would print a line per row; the first ones tell the story.
MAX_PROBLEMS = 100

MAX_QTY = 1_000_000
MAX_MINOR_UNITS = 1_000_000_000  # ten million in a currency with cents
MAX_ID = 2_147_483_647  # customer ids are INTEGER: PostgreSQL's holds 31 bits
MAX_LINE_NO = 1000
MAX_PRIORITY = 1_000_000
MAX_LEAD_DAYS = 3650
MAX_ALTERNATIVES = 20
YEARS_BACK = 10
YEARS_AHEAD = 10
CLOCK_SKEW = timedelta(days=1)
# What bot/understanding.py reads as an order number in a customer's message (_ORDER_DIGITS):
# a number outside this can be imported but never asked about. A test keeps the two in step.
ORDER_NUMBER_DIGITS = (4, 10)

# ASCII only: str.isdigit and int() also take Arabic-Indic and other scripts' digits, and int()
# takes "1_000"; the store and the bot read neither.
_INT_RE = re.compile(r"-?[0-9]+")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)
_ORDER_NUMBER_RE = re.compile(
    "[0-9]{%d,%d}" % ORDER_NUMBER_DIGITS  # noqa: UP031 (braces would read as the format's)
)
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
# C0 (tab and line breaks included), DEL, C1, and Unicode's own line and paragraph separators:
# every field is one line of text shown in a chat or matched against one.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# The first bytes of files an operator may pick instead of the CSV export.
_SIGNATURES = (
    (b"PK\x03\x04", "a ZIP archive or an Excel .xlsx workbook: export it as CSV UTF-8"),
    (b"\xd0\xcf\x11\xe0", "an Excel .xls workbook: export it as CSV UTF-8"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive: unpack it first"),
)
_UTF8_BOM = b"\xef\xbb\xbf"


class ImportFailed(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RowError(ValueError):
    pass


class _FileError(Exception):
    """The file cannot be read on from here: the message is the whole ``file:line: reason``."""


@dataclass(frozen=True)
class ImportResult:
    kind: str
    rows: int
    changed: int


@dataclass(frozen=True)
class _Context:
    now: datetime

    @property
    def today(self) -> date:
        return self.now.date()


def show(raw: str, limit: int = 40) -> str:
    """A value for an error line: quoted, escaped, and cut short (a bad field may be huge)."""
    return repr(raw) if len(raw) <= limit else repr(raw[:limit]) + f"... ({len(raw):,} characters)"


def _raw(row: dict[str, str], col: str) -> str:
    return (row.get(col) or "").strip()


def whole_number(raw: str, col: str, lo: int, hi: int) -> int:
    """``raw`` as an int from ``lo`` to ``hi``, written in ASCII digits (and a minus sign)."""
    if not _INT_RE.fullmatch(raw):
        raise RowError(f"{col}: not a whole number in ASCII digits: {show(raw)}")
    if len(raw) > 20:  # int() of thousands of digits is slow, then refused by Python itself
        raise RowError(f"{col}: must be from {lo:,} to {hi:,}, got {show(raw)}")
    value = int(raw)
    if not lo <= value <= hi:
        raise RowError(f"{col}: must be from {lo:,} to {hi:,}, got {raw}")
    return value


def _int(row: dict[str, str], col: str, lo: int, hi: int) -> int:
    return whole_number(_raw(row, col), col, lo, hi)


def _years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def strict_date(raw: str, col: str) -> date:
    """``YYYY-MM-DD`` and nothing else: date.fromisoformat also reads ISO week dates
    (``2026-W50-1``) and ordinal dates."""
    try:
        if not _DATE_RE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise RowError(f"{col}: not an ISO date (YYYY-MM-DD): {show(raw)}") from None


def iso_date(raw: str, col: str, today: date, *, back: int, ahead: timedelta | int) -> date:
    """A strict ``YYYY-MM-DD`` date, no more than ``back`` years before ``today`` and no more
    than ``ahead`` (years, or a timedelta) after it."""
    value = strict_date(raw, col)
    if value < _years(today, -back):
        raise RowError(f"{col}: more than {back} years back: {show(raw)}")
    if isinstance(ahead, int) and value > _years(today, ahead):
        raise RowError(f"{col}: more than {ahead} years ahead: {show(raw)}")
    if isinstance(ahead, timedelta) and value > today + ahead:
        raise RowError(f"{col}: in the future: {show(raw)}")
    return value


def _date(row: dict[str, str], col: str, ctx: _Context) -> date:
    return iso_date(_raw(row, col), col, ctx.today, back=YEARS_BACK, ahead=YEARS_AHEAD)


def _datetime(row: dict[str, str], col: str, ctx: _Context) -> datetime:
    raw = _raw(row, col)
    try:
        if not _DATETIME_RE.fullmatch(raw):
            raise ValueError
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 with a positive offset overflows
        raise RowError(
            f"{col}: not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM): {show(raw)}"
        ) from None
    if value.date() < _years(ctx.today, -YEARS_BACK):
        raise RowError(f"{col}: more than {YEARS_BACK} years back: {show(raw)}")
    if value > ctx.now + CLOCK_SKEW:
        raise RowError(f"{col}: in the future (more than a day ahead of this clock): {show(raw)}")
    return value


def _bool(row: dict[str, str], col: str, default: bool) -> bool:
    raw = _raw(row, col).lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise RowError(f"{col}: not a boolean (true/false): {show(raw)}")


def _text(row: dict[str, str], col: str) -> str:
    raw = _raw(row, col)
    if not raw:
        raise RowError(f"{col}: empty")
    return raw


def _opt(row: dict[str, str], col: str) -> str | None:
    return _raw(row, col) or None


def _sku(row: dict[str, str], col: str = "sku") -> str:
    return _text(row, col).upper()


def _email(raw: str) -> str:
    local, at, domain = raw.rpartition("@")
    if not at or not local or not domain or len(local) > 64 or any(c.isspace() for c in raw):
        raise RowError(f"email: not an email address: {show(raw)}")
    return raw


def _product(row: dict[str, str], ctx: _Context) -> tuple[str, Any]:
    cur = _text(row, "currency").upper()
    if not _CURRENCY_RE.fullmatch(cur):
        raise RowError(f"currency: not a 3-letter code: {show(cur)}")
    alts = [a.strip().upper() for a in (row.get("alternatives") or "").split("|") if a.strip()]
    if len(alts) > MAX_ALTERNATIVES:
        raise RowError(f"alternatives: more than {MAX_ALTERNATIVES}: {len(alts)}")
    long = [a for a in alts if len(a) > MAX_CHARS["sku"]]
    if long:
        raise RowError(f"alternatives: longer than {MAX_CHARS['sku']} characters: {show(long[0])}")
    p = ProductIn(
        sku=_sku(row),
        name_en=_text(row, "name_en"),
        category=_text(row, "category"),
        price_minor=_int(row, "price_minor", 0, MAX_MINOR_UNITS),
        currency=cur,
        active=_bool(row, "active", True),
        backorderable=_bool(row, "backorderable", True),
        name_de=_opt(row, "name_de"),
        name_es=_opt(row, "name_es"),
        name_ru=_opt(row, "name_ru"),
    )
    return p.sku, (p, alts)


def _supplier(row: dict[str, str], ctx: _Context) -> tuple[str, Any]:
    lead = _int(row, "lead_days", 0, MAX_LEAD_DAYS) if _opt(row, "lead_days") else None
    email = _opt(row, "email")
    return _text(row, "supplier_id"), (
        _text(row, "supplier_id"),
        _text(row, "name"),
        _email(email) if email else None,
        lead,
    )


def _stock(row: dict[str, str], ctx: _Context) -> tuple[str, Any]:
    return _sku(row), (_sku(row), _int(row, "on_hand", 0, MAX_QTY))


def _restock(row: dict[str, str], ctx: _Context) -> tuple[str, Any]:
    qty = _int(row, "qty", 1, MAX_QTY)
    return _text(row, "restock_id"), (
        _text(row, "restock_id"),
        _text(row, "supplier_id"),
        _sku(row),
        qty,
        _date(row, "expected_date", ctx),
    )


def _customer(row: dict[str, str], ctx: _Context) -> tuple[str, Any]:
    lang = (_opt(row, "language") or "en").lower()
    if lang not in LANGUAGES:
        raise RowError(f"language: not one of {', '.join(LANGUAGES)}: {show(lang)}")
    email = _email(_text(row, "email"))
    cid = _int(row, "customer_id", 1, MAX_ID)
    return str(cid), CustomerIn(
        cid, _text(row, "name"), email, _opt(row, "phone"), _opt(row, "postcode"), lang
    )


def _order_line(row: dict[str, str], ctx: _Context) -> tuple[str, Any]:
    number = _text(row, "order_number")
    if not _ORDER_NUMBER_RE.fullmatch(number):
        low, high = ORDER_NUMBER_DIGITS
        raise RowError(
            f"order_number: {low} to {high} ASCII digits (what the bot reads in a message):"
            f" {show(number)}"
        )
    line_no = _int(row, "line_no", 1, MAX_LINE_NO)
    price = (
        _int(row, "unit_price_minor", 0, MAX_MINOR_UNITS) if _opt(row, "unit_price_minor") else None
    )
    head = (
        _int(row, "customer_id", 1, MAX_ID),
        _datetime(row, "placed_at", ctx),
        _int(row, "priority", -MAX_PRIORITY, MAX_PRIORITY) if _opt(row, "priority") else 0,
    )
    return f"{number}#{line_no}", (
        number,
        head,
        line_no,
        NewLine(_sku(row), _int(row, "qty", 1, MAX_QTY), price),
    )


PARSERS: dict[str, Callable[[dict[str, str], _Context], tuple[str, Any]]] = {
    "products": _product,
    "suppliers": _supplier,
    "stock": _stock,
    "restocks": _restock,
    "customers": _customer,
    "orders": _order_line,
}


def control(char: str) -> str:
    code = ord(char)
    known = {0: " (NUL)", 9: " (tab)", 10: " (line break)", 13: " (carriage return)"}
    return f"control character U+{code:04X}{known.get(code, '')}"


def check_field(col: str, value: str, limit: int) -> None:
    """One field's characters: no control characters, at most ``limit`` of them."""
    bad = _CONTROL_RE.search(value)
    if bad:
        raise RowError(f"{col}: {control(bad.group())} at character {bad.start() + 1}")
    if len(value.strip()) > limit:
        raise RowError(f"{col}: longer than {limit:,} characters ({len(value.strip()):,})")


def _sniff(name: str, head: bytes) -> None:
    """Refuse what is plainly not UTF-8 text, from the file's first bytes."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise _FileError(f"{name}:1: not UTF-8 text (looks like UTF-32: save as UTF-8)")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _FileError(f"{name}:1: not UTF-8 text (looks like UTF-16: save as UTF-8)")
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            raise _FileError(f"{name}:1: not a CSV text file (looks like {what})")
    if b"\x00" in head:
        # UTF-16 without a byte order mark: ASCII text has a zero in every other byte.
        even, odd = head[0::2], head[1::2]
        if max(even.count(0), odd.count(0)) * 4 >= len(head) and min(
            even.count(0), odd.count(0)
        ) * 20 < len(head):
            raise _FileError(f"{name}:1: not UTF-8 text (looks like UTF-16: save as UTF-8)")
    # A stray NUL in a name is found on its own line; a file that is one in twenty control
    # bytes is no text at all.
    controls = sum(1 for b in head if b < 0x20 and b not in b"\t\r\n")
    if controls * 20 > len(head):
        raise _FileError(f"{name}:1: not a CSV text file (binary data)")


class _Lines:
    """The file's physical lines decoded one at a time, for csv.reader: an undecodable or
    over-long line is named by its number instead of failing the whole file somewhere."""

    def __init__(self, name: str, f: IO[bytes]) -> None:
        self.name = name
        self._f = f
        self.number = 0
        self.record_start = 1
        self._record_bytes = 0
        self.header: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def record_done(self) -> None:
        self.record_start = self.number + 1
        self._record_bytes = 0

    def _column_at_end(self, head: bytes) -> str:
        """`` (in column X)``: the column still open where an over-long line was cut."""
        if self.number == 1 or not self.header:
            return ""
        fields = next(csv.reader([head.decode("utf-8", "replace")]), [])
        at = len(fields) - 1
        return f" (in column {self.header[at]})" if 0 <= at < len(self.header) else ""

    def __next__(self) -> str:
        raw = self._f.readline(MAX_LINE_BYTES + 2)  # room for the line's own \r\n
        if not raw:
            raise StopIteration
        self.number += 1
        if self.number == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
        if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise _FileError(
                f"{self.name}:{self.number}: line longer than {MAX_LINE_BYTES:,} bytes"
                + self._column_at_end(raw[:MAX_LINE_BYTES])
            )
        self._record_bytes += len(raw)
        if self._record_bytes > MAX_LINE_BYTES:
            raise _FileError(
                f"{self.name}:{self.record_start}: a quoted field runs on over"
                f" {MAX_LINE_BYTES:,} bytes of lines (a quote not closed?)"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start]
            try:
                raw.decode("cp1252")
                guess = "looks like Windows-1252 or Latin-1"
            except UnicodeDecodeError:
                guess = "an unknown encoding"
            raise _FileError(
                f"{self.name}:{self.number}: not UTF-8 text (byte 0x{bad:02X} at byte"
                f" {e.start + 1} of the line, {guess}: save as UTF-8)"
            ) from None


def _header(name: str, cells: list[str], kind: str) -> list[str]:
    header = [h.strip() for h in cells]
    for h in header:
        for sep in (";", "\t"):
            if len(header) == 1 and sep in h:
                shown = "tabs" if sep == "\t" else f"'{sep}'"
                raise ImportFailed(
                    [f"{name}:1: columns are separated by {shown}: save as CSV with commas"]
                )
        bad = _CONTROL_RE.search(h)
        if bad:
            raise ImportFailed([f"{name}:1: {control(bad.group())} in a column name"])
    first: dict[str, int] = {}
    for i, h in enumerate(header, 1):
        if not h:  # a spreadsheet's trailing empty columns export as ",,"
            raise ImportFailed([f"{name}:1: column {i} has no name"])
        if h in first:
            raise ImportFailed(
                [f"{name}:1: duplicate column {show(h)} (columns {first[h]} and {i})"]
            )
        first[h] = i
    required, optional = COLUMNS[kind]
    missing = [c for c in required if c not in header]
    if missing:
        raise ImportFailed([f"{name}:1: missing columns: {', '.join(missing)}"])
    unknown = [c for c in header if c not in required and c not in optional]
    if unknown:
        raise ImportFailed(
            [f"{name}:1: unknown columns: {', '.join(show(c, 32) for c in unknown)}"]
        )
    return header


def parse_file(kind: str, path: Path, *, now: datetime | None = None) -> list[tuple[int, Any]]:
    """Check every row; raise ImportFailed with all problems, or return (line, record).

    ``now`` is the clock that dates are checked against (tests); by default this machine's."""
    if kind not in PARSERS:
        raise ImportFailed([f"unknown import kind {kind!r} (one of {', '.join(KINDS)})"])
    if not path.is_file():
        raise ImportFailed([f"{path}: no such file"])
    try:
        with path.open("rb") as f:
            return _parse(kind, path.name, f, _Context(now or datetime.now(UTC)))
    except OSError as e:
        raise ImportFailed([f"{path}: cannot read: {e.strerror or e}"]) from None


def parse_row(kind: str, row: dict[str, str], *, now: datetime | None = None) -> Any:
    """One row of ``kind`` checked by the file's rules (each field's characters and length,
    then the kind's own parser): its record, or RowError. For rows that come another way than
    a file (the Shopify adapter), so there is one copy of the rules."""
    for col, value in row.items():
        check_field(col, value, MAX_CHARS_OF_KIND.get((kind, col), MAX_CHARS[col]))
    return PARSERS[kind](row, _Context(now or datetime.now(UTC)))[1]


def _parse(kind: str, name: str, f: IO[bytes], ctx: _Context) -> list[tuple[int, Any]]:
    problems: list[str] = []
    records: list[tuple[int, Any]] = []
    seen: dict[str, tuple[int, Any]] = {}
    lines = _Lines(name, f)
    try:
        _sniff(name, f.read(4096))
        f.seek(0)
        reader = csv.reader(lines, strict=True)
        header = lines.header = _header(name, next(reader, []), kind)
        lines.record_done()
        limits = [MAX_CHARS_OF_KIND.get((kind, h), MAX_CHARS[h]) for h in header]
        for cells in reader:
            line = lines.record_start  # a record over several lines is named by its first
            lines.record_done()
            if not cells:
                continue
            if len(problems) >= MAX_PROBLEMS:
                problems.append(f"{name}:{line}: more than {MAX_PROBLEMS} problems; stopped here")
                break
            if len(cells) > len(header):
                problems.append(f"{name}:{line}: more fields than columns")
                continue
            row = dict(zip(header, cells, strict=False))
            try:
                for col, limit in zip(header, limits, strict=False):
                    check_field(col, row.get(col) or "", limit)
                key, rec = PARSERS[kind](row, ctx)
            except RowError as e:
                problems.append(f"{name}:{line}: {e}")
                continue
            if key in seen:
                first_line, first = seen[key]
                if first != rec:
                    problems.append(
                        f"{name}:{line}: duplicate id {key} with different content"
                        f" (first on line {first_line})"
                    )
                continue
            seen[key] = (line, rec)
            records.append((line, rec))
    except _FileError as e:
        problems.append(str(e))
    except csv.Error as e:
        reason = str(e)
        if reason.startswith("new-line character seen in unquoted field"):
            # csv's own words speak to a programmer: the file has old Mac line ends.
            reason = (
                "a carriage return (CR) alone in an unquoted field: save with LF or CRLF line ends"
            )
        problems.append(f"{name}:{lines.record_start}: not valid CSV ({reason})")
    if kind == "orders":
        heads: dict[str, tuple[int, Any]] = {}
        for at, (number, head, _, _) in records:
            if number in heads and heads[number][1] != head:
                problems.append(
                    f"{name}:{at}: order {number}: customer_id/placed_at/priority"
                    f" differ from line {heads[number][0]}"
                )
            heads.setdefault(number, (at, head))
    if problems:
        raise ImportFailed(problems)
    return records


async def apply_file(
    conn: AsyncConnection,
    kind: str,
    path: Path,
    *,
    progress: Callable[[int], object] | None = None,
    one_by_one: bool = False,
    parsed: list[tuple[int, Any]] | None = None,
    prepared: PreparedOrders | None = None,
) -> ImportResult:
    """Apply a checked file inside the caller's transaction; any store error is reported with
    its line and raised as ImportFailed (the caller rolls back). ``progress`` is told the rows
    applied of stock counts and orders, the kinds that can take minutes. ``parsed``: the
    file's ``parse_file`` already, read before the transaction began (a quarter of a second
    of a 2,000-order file's, under load, not spent holding the write lock). ``prepared``:
    an orders file's ``prepare_orders`` of those records, read before the transaction too."""
    records = parse_file(kind, path) if parsed is None else parsed
    name = path.name
    changed = 0
    line = 0
    try:
        if kind == "products":
            for at, (p, _) in records:
                line = at
                changed += await upsert_product(conn, p)
            for at, (p, alts) in records:
                line = at
                changed += await set_alternatives(conn, p.sku, alts) if alts else 0
        elif kind == "suppliers":
            for at, (sid, sname, email, lead) in records:
                line = at
                changed += await upsert_supplier(conn, sid, sname, email, lead)
        elif kind == "stock":
            for at, (sku, on_hand) in records:
                line = at
                if await product_by_sku(conn, sku) is None:
                    raise StoreError(f"unknown SKU {sku}")
                before = await _on_hand(conn, sku)
                await set_stock(conn, sku, on_hand)
                changed += before != on_hand
                if progress is not None:
                    progress(1)
        elif kind == "restocks":
            for at, (rid, sid, sku, qty, when) in records:
                line = at
                changed += await add_restock(conn, rid, sid, sku, qty, when)
        elif kind == "customers":
            for at, c in records:
                line = at
                changed += await upsert_customer(conn, c)
        elif kind == "orders":
            ready = prepared if prepared is not None else _group_orders(records)
            known = ready.known
            if not ready.skus <= known:
                # Products are never deleted: only those unknown before may be known now.
                known = known | await _known_skus(conn, ready.skus - known)
            for at, (_, _, _, nl) in records:
                line = at
                # Unknown SKUs are named on their own row, not the order's first.
                if normalize_sku(nl.sku) not in known:
                    raise StoreError(f"unknown SKU {nl.sku}")
            grouped = dict(ready.grouped)
            # The whole file at once when that gives the same store (place_orders says);
            # otherwise one order after another, as before.
            line = next(iter(grouped.values()))[0] if grouped else 0
            placed_all = (
                await place_orders(conn, ready.orders, ready.plan)
                if not one_by_one and ready.numbered
                else None
            )
            if placed_all is not None:
                changed = placed_all
                if progress is not None:
                    progress(len(records))
                grouped = {}
            for number, (at, (cid, placed_at, prio), lines) in grouped.items():
                line = at
                nos = sorted(no for no, _ in lines)
                if nos != list(range(1, len(nos) + 1)):
                    raise StoreError(
                        f"order {number}: line numbers must be 1..{len(nos)}, got {nos}"
                    )
                placed = await place_order(
                    conn,
                    number,
                    cid,
                    [nl for _, nl in sorted(lines, key=lambda x: x[0])],
                    placed_at=placed_at,
                    priority=prio,
                )
                changed += placed.created
                if progress is not None:
                    progress(len(lines))
    except StoreError as e:
        raise ImportFailed([f"{name}:{line}: {e}"]) from e
    except DBAPIError as e:
        if is_busy(e):
            raise  # not the row's fault: the caller says so in its own words
        raise ImportFailed([f"{name}:{line}: the store refused this row: {db_reason(e)}"]) from e
    return ImportResult(kind, len(records), changed)


@dataclass(frozen=True)
class PreparedOrders:
    """An orders file grouped into orders, and what could be read of the store for it before
    the write transaction: the SKUs known then, and place_orders's plan (store.backorders.
    plan_orders; None: the file is placed one by one, or decided again under the lock)."""

    grouped: dict[str, tuple[int, Any, list[tuple[int, NewLine]]]]
    orders: list[OrderIn]
    skus: set[str]
    numbered: bool  # every order's lines numbered 1..n: the whole file may be placed at once
    known: AbstractSet[str] = frozenset()
    plan: OrdersPlan | None = None


def _group_orders(records: list[tuple[int, Any]]) -> PreparedOrders:
    grouped: dict[str, tuple[int, Any, list[tuple[int, NewLine]]]] = {}
    for at, (number, head, line_no, nl) in records:
        grouped.setdefault(number, (at, head, []))[2].append((line_no, nl))
    return PreparedOrders(
        grouped,
        [
            OrderIn(
                number,
                cid,
                tuple(nl for _, nl in sorted(lines, key=lambda x: x[0])),
                placed_at,
                prio,
            )
            for number, (_, (cid, placed_at, prio), lines) in grouped.items()
        ],
        {normalize_sku(nl.sku) for _, (_, _, _, nl) in records},
        all(_numbered(lines) for _, _, lines in grouped.values()),
    )


async def prepare_orders(conn: AsyncConnection, records: list[tuple[int, Any]]) -> PreparedOrders:
    """An orders file's ``parse_file`` records grouped, and the store read for them, on a
    connection outside the write transaction (``store.connect()``): apply_file then reads
    again under the write lock only what may have moved since (store.backorders.place_orders
    with a plan), and decides again for what did, with the same result."""
    ready = _group_orders(records)
    known = await _known_skus(conn, ready.skus)
    plan = None
    if ready.numbered and ready.skus <= known:
        plan = await plan_orders(conn, ready.orders)
    return PreparedOrders(ready.grouped, ready.orders, ready.skus, ready.numbered, known, plan)


def _numbered(lines: list[tuple[int, NewLine]]) -> bool:
    return sorted(no for no, _ in lines) == list(range(1, len(lines) + 1))


async def _known_skus(conn: AsyncConnection, skus: set[str]) -> set[str]:
    from sqlalchemy import select

    from store.schema import products

    wanted = sorted(skus)
    known: set[str] = set()
    for start in range(0, len(wanted), 5000):
        part = wanted[start : start + 5000]
        known.update(await conn.scalars(select(products.c.sku).where(products.c.sku.in_(part))))
    return known


async def _on_hand(conn: AsyncConnection, sku: str) -> int:
    from sqlalchemy import select

    from store.schema import stock

    return int(await conn.scalar(select(stock.c.on_hand).where(stock.c.sku == sku)) or 0)

"""CSV imports: every row checked first, then the whole file applied in one transaction.

A file with any bad row writes nothing; each problem is reported as ``file:line: reason``.
Formats: docs/csv-formats.md.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import NewLine, place_order, set_stock
from store.catalog import product_by_sku
from store.errors import StoreError
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


class ImportFailed(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RowError(ValueError):
    pass


@dataclass(frozen=True)
class ImportResult:
    kind: str
    rows: int
    changed: int


def _int(row: dict[str, str], col: str, *, minimum: int | None = 0) -> int:
    raw = (row.get(col) or "").strip()
    try:
        value = int(raw)
    except ValueError:
        raise RowError(f"{col}: not an integer: {raw!r}") from None
    if minimum is not None and value < minimum:
        raise RowError(f"{col}: must be >= {minimum}, got {value}")
    return value


def _date(row: dict[str, str], col: str) -> date:
    raw = (row.get(col) or "").strip()
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise RowError(f"{col}: not an ISO date (YYYY-MM-DD): {raw!r}") from None


def _datetime(row: dict[str, str], col: str) -> datetime:
    raw = (row.get(col) or "").strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(
            f"{col}: not an ISO date-time (YYYY-MM-DDTHH:MM:SS[+HH:MM]): {raw!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _bool(row: dict[str, str], col: str, default: bool) -> bool:
    raw = (row.get(col) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise RowError(f"{col}: not a boolean (true/false): {raw!r}")


def _text(row: dict[str, str], col: str) -> str:
    raw = (row.get(col) or "").strip()
    if not raw:
        raise RowError(f"{col}: empty")
    return raw


def _opt(row: dict[str, str], col: str) -> str | None:
    return (row.get(col) or "").strip() or None


def _sku(row: dict[str, str], col: str = "sku") -> str:
    return _text(row, col).upper()


def _product(row: dict[str, str]) -> tuple[str, Any]:
    cur = _text(row, "currency").upper()
    if len(cur) != 3 or not cur.isalpha():
        raise RowError(f"currency: not a 3-letter code: {cur!r}")
    alts = [a.strip().upper() for a in (row.get("alternatives") or "").split("|") if a.strip()]
    p = ProductIn(
        sku=_sku(row),
        name_en=_text(row, "name_en"),
        category=_text(row, "category"),
        price_minor=_int(row, "price_minor"),
        currency=cur,
        active=_bool(row, "active", True),
        backorderable=_bool(row, "backorderable", True),
        name_de=_opt(row, "name_de"),
        name_es=_opt(row, "name_es"),
        name_ru=_opt(row, "name_ru"),
    )
    return p.sku, (p, alts)


def _supplier(row: dict[str, str]) -> tuple[str, Any]:
    lead = _int(row, "lead_days") if _opt(row, "lead_days") else None
    return _text(row, "supplier_id"), (
        _text(row, "supplier_id"),
        _text(row, "name"),
        _opt(row, "email"),
        lead,
    )


def _stock(row: dict[str, str]) -> tuple[str, Any]:
    return _sku(row), (_sku(row), _int(row, "on_hand"))


def _restock(row: dict[str, str]) -> tuple[str, Any]:
    qty = _int(row, "qty", minimum=1)
    return _text(row, "restock_id"), (
        _text(row, "restock_id"),
        _text(row, "supplier_id"),
        _sku(row),
        qty,
        _date(row, "expected_date"),
    )


def _customer(row: dict[str, str]) -> tuple[str, Any]:
    lang = (_opt(row, "language") or "en").lower()
    if lang not in LANGUAGES:
        raise RowError(f"language: not one of {', '.join(LANGUAGES)}: {lang!r}")
    email = _text(row, "email")
    if "@" not in email:
        raise RowError(f"email: not an email address: {email!r}")
    cid = _int(row, "customer_id", minimum=1)
    return str(cid), CustomerIn(
        cid, _text(row, "name"), email, _opt(row, "phone"), _opt(row, "postcode"), lang
    )


def _order_line(row: dict[str, str]) -> tuple[str, Any]:
    number = _text(row, "order_number")
    if not number.isdigit():
        raise RowError(f"order_number: digits only: {number!r}")
    line_no = _int(row, "line_no", minimum=1)
    price = _int(row, "unit_price_minor") if _opt(row, "unit_price_minor") else None
    head = (
        _int(row, "customer_id", minimum=1),
        _datetime(row, "placed_at"),
        _int(row, "priority", minimum=None) if _opt(row, "priority") else 0,
    )
    return f"{number}#{line_no}", (
        number,
        head,
        line_no,
        NewLine(_sku(row), _int(row, "qty", minimum=1), price),
    )


PARSERS: dict[str, Callable[[dict[str, str]], tuple[str, Any]]] = {
    "products": _product,
    "suppliers": _supplier,
    "stock": _stock,
    "restocks": _restock,
    "customers": _customer,
    "orders": _order_line,
}


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:
                raise RowError(f"{path.name}:{reader.line_num}: more fields than columns")
            yield reader.line_num, row


def parse_file(kind: str, path: Path) -> list[tuple[int, Any]]:
    """Check every row; raise ImportFailed with all problems, or return (line, record)."""
    if kind not in PARSERS:
        raise ImportFailed([f"unknown import kind {kind!r} (one of {', '.join(KINDS)})"])
    if not path.is_file():
        raise ImportFailed([f"{path}: no such file"])
    name = path.name
    required, optional = COLUMNS[kind]
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise ImportFailed([f"{name}:1: missing columns: {', '.join(missing)}"])
    unknown = [c for c in header if c not in required and c not in optional]
    if unknown:
        raise ImportFailed([f"{name}:1: unknown columns: {', '.join(unknown)}"])
    problems: list[str] = []
    records: list[tuple[int, Any]] = []
    seen: dict[str, tuple[int, Any]] = {}
    try:
        for line, row in _rows(path):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            try:
                key, rec = PARSERS[kind](row)
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
    except RowError as e:
        problems.append(str(e))
    if kind == "orders":
        heads: dict[str, tuple[int, Any]] = {}
        for at, (number, head, _, _) in records:
            line = at
            if number in heads and heads[number][1] != head:
                problems.append(
                    f"{name}:{line}: order {number}: customer_id/placed_at/priority"
                    f" differ from line {heads[number][0]}"
                )
            heads.setdefault(number, (line, head))
    if problems:
        raise ImportFailed(problems)
    return records


async def apply_file(conn: AsyncConnection, kind: str, path: Path) -> ImportResult:
    """Apply a checked file inside the caller's transaction; any store error is reported with
    its line and raised as ImportFailed (the caller rolls back)."""
    records = parse_file(kind, path)
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
        elif kind == "restocks":
            for at, (rid, sid, sku, qty, when) in records:
                line = at
                changed += await add_restock(conn, rid, sid, sku, qty, when)
        elif kind == "customers":
            for at, c in records:
                line = at
                changed += await upsert_customer(conn, c)
        elif kind == "orders":
            grouped: dict[str, tuple[int, Any, list[tuple[int, NewLine]]]] = {}
            for at, (number, head, line_no, nl) in records:
                line = at
                # Unknown SKUs are named on their own row, not the order's first.
                if await product_by_sku(conn, nl.sku) is None:
                    raise StoreError(f"unknown SKU {nl.sku}")
                grouped.setdefault(number, (at, head, []))[2].append((line_no, nl))
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
    except StoreError as e:
        raise ImportFailed([f"{name}:{line}: {e}"]) from e
    return ImportResult(kind, len(records), changed)


async def _on_hand(conn: AsyncConnection, sku: str) -> int:
    from sqlalchemy import select

    from store.schema import stock

    return int(await conn.scalar(select(stock.c.on_hand).where(stock.c.sku == sku)) or 0)

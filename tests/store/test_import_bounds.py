# ruff: noqa: E501  (expected messages read best unwrapped)
"""Issue #13: the bounds of every checked value, at their edges, against a fixed clock
(parse_file's ``now``): the last value accepted and the first refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.understanding import _ORDER_DIGITS, understand
from store.imports import ORDER_NUMBER_DIGITS, ImportFailed, parse_file

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
LEAP_DAY = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)
ORDERS = "order_number,customer_id,placed_at,line_no,sku,qty,priority,unit_price_minor\n"
RESTOCKS = "restock_id,supplier_id,sku,qty,expected_date\n"


def check(tmp_path: Path, kind: str, text: str, now: datetime = NOW) -> list[str]:
    """The problems parse_file finds in ``text``; [] when it accepts it."""
    path = tmp_path / f"{kind}.csv"
    path.write_text(text, encoding="utf-8")
    try:
        parse_file(kind, path, now=now)
    except ImportFailed as e:
        return e.problems
    return []


def order(number: str = "100001", placed_at: str = "2026-06-01T10:00:00Z", **cols: str) -> str:
    values = {"line_no": "1", "qty": "1", "priority": "", "unit_price_minor": "", **cols}
    return (
        f"{ORDERS}{number},1,{placed_at},{values['line_no']},KET-0001,{values['qty']},"
        f"{values['priority']},{values['unit_price_minor']}\n"
    )


@pytest.mark.parametrize(
    ("when", "now", "problem"),
    [
        ("2016-06-15", NOW, None),
        ("2016-06-14", NOW, "expected_date: more than 10 years back: '2016-06-14'"),
        ("2036-06-15", NOW, None),
        ("2036-06-16", NOW, "expected_date: more than 10 years ahead: '2036-06-16'"),
        # Ten years before a 29 February is the 28th.
        ("2018-02-28", LEAP_DAY, None),
        ("2018-02-27", LEAP_DAY, "expected_date: more than 10 years back: '2018-02-27'"),
    ],
)
def test_an_expected_date_is_within_ten_years_either_way(
    tmp_path: Path, when: str, now: datetime, problem: str | None
) -> None:
    text = f"{RESTOCKS}PO-1,SUP-1,KET-0001,5,{when}\n"
    assert check(tmp_path, "restocks", text, now) == (
        [f"restocks.csv:2: {problem}"] if problem else []
    )


@pytest.mark.parametrize(
    ("placed_at", "problem"),
    [
        # A day of clock skew ahead of this machine is allowed, and no more.
        ("2026-06-16T12:00:00Z", None),
        ("2026-06-16T14:00:00+02:00", None),
        ("2026-06-16T12:00:00", None),  # no offset: UTC
        (
            "2026-06-16T12:00:01Z",
            "placed_at: in the future (more than a day ahead of this clock): '2026-06-16T12:00:01Z'",
        ),
        ("2016-06-15T00:00:00Z", None),
        (
            "2016-06-14T23:59:59Z",
            "placed_at: more than 10 years back: '2016-06-14T23:59:59Z'",
        ),
        ("2026-06-01T10:00Z", None),
        ("2026-06-01T10:00:00.123456Z", None),
        (
            "2026-06-01T10:00:00+0200",
            "placed_at: not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM): '2026-06-01T10:00:00+0200'",
        ),
        (
            "2026-W22-1T10:00:00Z",
            "placed_at: not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM): '2026-W22-1T10:00:00Z'",
        ),
    ],
)
def test_placed_at_is_a_strict_date_time_not_in_the_future(
    tmp_path: Path, placed_at: str, problem: str | None
) -> None:
    expected = [f"orders.csv:2: {problem}"] if problem else []
    assert check(tmp_path, "orders", order(placed_at=placed_at)) == expected


@pytest.mark.parametrize(
    ("cols", "problem"),
    [
        ({"qty": "1000000"}, None),
        ({"qty": "1000001"}, "qty: must be from 1 to 1,000,000, got 1000001"),
        ({"qty": "0"}, "qty: must be from 1 to 1,000,000, got 0"),
        ({"line_no": "1001"}, "line_no: must be from 1 to 1,000, got 1001"),
        ({"priority": "-1000000"}, None),
        ({"priority": "1000001"}, "priority: must be from -1,000,000 to 1,000,000, got 1000001"),
        ({"unit_price_minor": "1000000000"}, None),
        (
            {"unit_price_minor": "1000000001"},
            "unit_price_minor: must be from 0 to 1,000,000,000, got 1000000001",
        ),
    ],
)
def test_order_line_numbers_within_their_bounds(
    tmp_path: Path, cols: dict[str, str], problem: str | None
) -> None:
    expected = [f"orders.csv:2: {problem}"] if problem else []
    assert check(tmp_path, "orders", order(**cols)) == expected


def test_text_fields_up_to_their_length(tmp_path: Path) -> None:
    name, email = "N" * 200, "e" * 64 + "@" + "d" * 189
    assert len(email) == 254
    assert check(tmp_path, "customers", f"customer_id,name,email\n1,{name},{email}\n") == []
    assert check(tmp_path, "customers", f"customer_id,name,email\n1,{name},{email}x\n") == [
        "customers.csv:2: email: longer than 254 characters (255)"
    ]
    local = "l" * 65 + "@example.com"
    assert check(tmp_path, "customers", f"customer_id,name,email\n1,Anna,{local}\n") == [
        f"customers.csv:2: email: not an email address: '{local[:40]}'... (77 characters)"
    ]


def test_stock_may_be_zero_and_a_million(tmp_path: Path) -> None:
    assert check(tmp_path, "stock", "sku,on_hand\nKET-0001,0\nKET-0002,1000000\n") == []
    assert check(tmp_path, "stock", "sku,on_hand\nKET-0001,1000001\n") == [
        "stock.csv:2: on_hand: must be from 0 to 1,000,000, got 1000001"
    ]


def test_order_numbers_are_what_the_bot_reads_in_a_message(tmp_path: Path) -> None:
    # The bot cannot import the store's rule nor the store the bot: this keeps them in step.
    assert ORDER_NUMBER_DIGITS == _ORDER_DIGITS
    low, high = ORDER_NUMBER_DIGITS
    for number in ("1" * low, "9" * high):
        assert understand(f"where is my order {number}").order_number == number
        assert check(tmp_path, "orders", order(number)) == []
    for number in ("1" * (low - 1), "9" * (high + 1)):
        assert understand(f"where is my order {number}").order_number is None
        assert check(tmp_path, "orders", order(number)) == [
            f"orders.csv:2: order_number: {low} to {high} ASCII digits (what the bot reads in a"
            f" message): '{number}'"
        ]

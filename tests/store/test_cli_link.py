"""`backorder-admin link`: the deep link for a customer or one order."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from store import open_store
from store.cli import DEMO_LINK_SECRET, main
from store.links import read_link_code
from store.schema import orders
from tests.conftest import fill_small_demo
from tests.pg import Databases, backend_param, sqlite_url

URL = re.compile(r"https://t\.me/(\w+)\?start=([A-Za-z0-9_-]{1,64})")
# Strong enough for store.links.secret_problem (32 characters or more).
SECRET = "s3cret-0123456789abcdefghijklmnop"
ENV_SECRET = "from-env-0123456789abcdefghijklmn"


@pytest.fixture(scope="module", params=backend_param())
def backend(request: pytest.FixtureRequest) -> str:
    """As tests/conftest.py's, for the whole module: the links only read the demo shop, so its
    tests share one copy of it per backend."""
    return str(request.param)


@pytest.fixture(scope="module")
def demo_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A copy of the small demo shop the bot's tests use (tests/conftest.py's template)."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("link") / "demo.sqlite3"
        shutil.copyfile(request.getfixturevalue("demo_db_template"), path)
        yield sqlite_url(path)
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("demo", fill_small_demo))
    try:
        yield url
    finally:
        databases.drop(name)


@pytest.fixture(autouse=True)
def _no_bot_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOT_USERNAME", "LINK_SECRET"):
        monkeypatch.delenv(name, raising=False)


def link(demo_url: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    assert main(["--db", demo_url, "link", *argv]) == 0
    out = capsys.readouterr().out
    match = URL.fullmatch(out.strip())
    assert match is not None, out
    return match.group(1), match.group(2)


def order_id(demo_url: str, number: str) -> int:
    async def read() -> int:
        store = await open_store(demo_url)
        try:
            async with store.connect() as conn:
                found = await conn.scalar(
                    select(orders.c.order_id).where(orders.c.order_number == number)
                )
        finally:
            await store.close()
        assert found is not None
        return int(found)

    return asyncio.run(read())


def test_a_link_for_a_customer(demo_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC)
    bot, code = link(
        demo_url, capsys, "--customer", "1", "--bot-username", "shop_bot", "--secret", SECRET
    )
    assert bot == "shop_bot"
    decoded = read_link_code(SECRET, code)
    assert decoded is not None
    assert (decoded.customer_id, decoded.order_id) == (1, None)
    # Whole seconds in the code, so allow for the truncation.
    assert before + timedelta(days=30, seconds=-1) <= decoded.expires_at
    assert decoded.expires_at <= datetime.now(UTC) + timedelta(days=30)
    assert read_link_code("another-secret", code) is None


def test_a_link_for_an_order_names_its_customer_and_the_order(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _bot, code = link(demo_url, capsys, "--order", "100005", "--secret", SECRET, "--days", "7")
    decoded = read_link_code(SECRET, code)
    assert decoded is not None
    assert (decoded.customer_id, decoded.order_id) == (2, order_id(demo_url, "100005"))
    assert decoded.expires_at <= datetime.now(UTC) + timedelta(days=7)
    assert decoded.expires_at > datetime.now(UTC) + timedelta(days=6)


def test_defaults_come_from_the_environment(
    demo_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_USERNAME", "envshop_bot")
    monkeypatch.setenv("LINK_SECRET", ENV_SECRET)
    bot, code = link(demo_url, capsys, "--customer", "4")
    assert bot == "envshop_bot"
    decoded = read_link_code(ENV_SECRET, code)
    assert decoded is not None and decoded.customer_id == 4


def test_without_any_secret_the_demo_default_is_used_with_a_warning(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", demo_url, "link", "--customer", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == (
        "warning: LINK_SECRET is not set; using the development secret, which only the sandbox"
        " accepts: a bot with a real token refuses codes signed with it"
    )
    match = URL.fullmatch(out.strip())
    assert match is not None and match.group(1) == "backorder_demo_bot"
    assert read_link_code(DEMO_LINK_SECRET, match.group(2)) is not None


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--customer", "999"], "error: no customer 999"),
        (["--order", "999999"], "error: no order 999999"),
        (["--customer", "1", "--days", "0"], "error: --days must be between 1 and 365"),
    ],
)
def test_unknown_targets_are_refused(
    demo_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    assert main(["--db", demo_url, "link", *argv, "--secret", SECRET]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == error


@pytest.mark.parametrize(
    "argv", [[], ["--customer", "1", "--order", "100001"], ["--customer", "one"]]
)
def test_exactly_one_target_is_required(
    demo_url: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(["--db", demo_url, "link", *argv]) == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("argv", "environ", "error"),
    [
        (
            ["--secret", "short-secret"],
            {},
            "error: --secret must be at least 32 characters",
        ),
        (
            [],
            {"LINK_SECRET": "short-secret"},
            "error: LINK_SECRET must be at least 32 characters",
        ),
        (
            [],
            {"LINK_SECRET": DEMO_LINK_SECRET},
            "error: LINK_SECRET is the sandbox's development secret, which anyone can read in"
            " the README",
        ),
        # The flag wins over the environment, weak or not.
        (
            ["--secret", DEMO_LINK_SECRET],
            {"LINK_SECRET": ENV_SECRET},
            "error: --secret is the sandbox's development secret, which anyone can read in"
            " the README",
        ),
    ],
)
def test_a_weak_secret_is_refused_and_prints_no_link(
    demo_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    environ: dict[str, str],
    error: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["--db", demo_url, "link", "--customer", "1", *argv]) == 1
    assert capsys.readouterr() == ("", error + "\n")


@pytest.mark.parametrize("value", ["1_000", "\u0661\u0660", "+1", "1e3"])
def test_a_customer_id_is_ascii_digits(
    demo_url: str, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert main(["--db", demo_url, "link", "--customer", value, "--secret", SECRET]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        "backorder-admin link: error: argument --customer: not a whole number in ASCII digits:"
        f" {value!r}"
    )

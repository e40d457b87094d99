"""The harness for behaviour tests: the sandbox Bot API, a store with demo data, and the real
bot application polling the sandbox over HTTP, exactly as run_bot.py assembles it."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_application
from bot.context import BotApplication
from bot.settings import Settings, load_settings
from bot.updates import UpdateIntake
from sandbox import Limits, Sandbox
from sandbox.client import SandboxClient
from store import Store, open_store
from store.demo import fill_demo
from store.inbox import count_updates
from tests.pg import BACKENDS, Databases, sqlite_only_deselect, sqlite_url
from tests.watchdog import pytest_runtest_protocol, pytest_terminal_summary  # noqa: F401 (hooks)

# Demo data is generated relative to this day, and the bot's clock starts on it.
TODAY = date(2026, 11, 26)
START = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # 11:00 in the shop's zone, a Thursday

# The bot under test has a real (the sandbox's) token, so its LINK_SECRET must pass
# store.links.secret_problem: not the development secret, at least 32 characters.
LINK_SECRET = "test-link-secret-0123456789abcdefghij"


@dataclass
class Clock:
    """The bot's clock (aware UTC); tests move it."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# Tests of the bot's side that run on SQLite only, by module or by test (marked here, where
# the store's fixtures are), with what keeps each off PostgreSQL for now.
SQLITE_ONLY: dict[str, str] = {
    "tests/bot/test_inbox.py::test_an_answered_update_is_marked_at_the_loops_next_turn": (
        "a SQLite file's inline writer writes the mark within the next turn; through"
        " PostgreSQL's pool the mark starts then and takes several turns"
    ),
    "tests/test_chaos_import.py": (
        "paced for SQLite: on PostgreSQL the second import committed after the last update"
        " was answered (during = [642, 816])"
    ),
}
# The slowest of the bot's tests run on SQLite only, to keep the suite's time: on PostgreSQL
# they took 15-60 s each, and other tests of their modules cover the same handlers there.
# TEST_POSTGRESQL_ALL=1 runs them on PostgreSQL too.
_TIME = "time: the slowest bot tests run on SQLite only (TEST_POSTGRESQL_ALL=1 runs them)"
SQLITE_ONLY_FOR_TIME = {
    "tests/bot/test_notice_restart.py": _TIME,
    "tests/bot/test_notice_import.py": _TIME,
    "tests/test_chaos_restart.py": _TIME,
    "tests/bot/test_notice_leases.py::test_a_batch_slower_than_its_lease_is_sent_once": _TIME,
    "tests/bot/test_cancel_and_conversation.py::test_a_forged_cancel_of_another_customers_line"
    "_changes_nothing": _TIME,
    "tests/bot/test_account.py::test_keeping_the_link_and_forged_unlink_presses_change_nothing": (
        _TIME
    ),
    "tests/bot/test_stock.py::test_a_forged_product_or_notify_press_changes_nothing": _TIME,
    # Every text in each of the four languages: the store's part is the same in each, and
    # test_orders, test_stock, test_cancel_and_conversation, ... read it on PostgreSQL.
    "tests/bot/test_every_language.py": _TIME,
    # The fuzzing runs a fifth of its examples on PostgreSQL (test_fuzz.examples, with its
    # store dumps read from PostgreSQL's catalog); these still took 110 s (+42 s setup: every
    # real keyboard pressed, each forged press reading every table twice), 26 s and 19 s
    # there under a load of 12, and passed. Its regressions run on PostgreSQL.
    "tests/bot/test_fuzz.py::test_any_press_by_anyone": _TIME,
    "tests/bot/test_fuzz.py::test_any_text_from_linked_customers": _TIME,
    "tests/bot/test_fuzz.py::test_any_text_from_strangers": _TIME,
}
if not os.environ.get("TEST_POSTGRESQL_ALL"):
    SQLITE_ONLY |= SQLITE_ONLY_FOR_TIME


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin's configure
def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis keeps its caches and example database in ./.hypothesis by default: in the
    # repository, where a test must not write. The run's temporary directory instead.
    from hypothesis.configuration import set_hypothesis_home_dir

    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    set_hypothesis_home_dir(base / "hypothesis")


# The longest tests (8-35 s each on a quiet machine, by `pytest --durations`), longest first:
# they start first, spread over the xdist workers (--maxschedchunk=1 in pyproject.toml: the
# tests are handed out one at a time in this order), and the short ones fill in behind them;
# at the end of the list one of them kept its worker busy for half a minute after the others
# had finished. A test missing here only runs later; keep the list to the long ones.
LONGEST_FIRST = [
    "tests/store/test_policy_kill.py::test_a_kill_in_the_middle_of_a_first_pass_over_50000",
    "tests/bot/test_notice_import.py",
    "tests/test_processes.py::test_a_killed_process",
    "tests/bot/test_fuzz.py::test_any_press_by_anyone",
    "tests/store/test_policy_machine.py",
    "tests/bot/test_notice_fanout.py::test_a_fan_out_of_hundreds",
    "tests/bot/test_notice_restart.py",
    "tests/test_processes.py",
    "tests/test_chaos_load.py",
    "tests/test_chaos_restart.py",
    "tests/bot/test_notice_leases.py",
    "tests/test_webhook_chaos.py",
    "tests/test_understanding.py::test_a_damaged_cached_model",
    "tests/store/test_properties.py",
    "tests/store/test_import_concurrent.py",
    "tests/bot/test_fuzz.py::test_any_text",
    "tests/store/test_projection_batches.py::test_two_processes",
    "tests/bot/test_notice_faults.py",
    "tests/bot/test_notice_fanout.py",
    "tests/test_chaos_import.py",
    "tests/store/test_policy_concurrent.py",
    "tests/store/test_policy_kill.py",
    "tests/bot/test_notices.py",
    "tests/test_run_bot.py",
]


def _longest_first(item: pytest.Item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        test = item.nodeid.split("[")[0]
        reason = SQLITE_ONLY.get(test) or SQLITE_ONLY.get(test.split("::")[0])
        if reason is not None:
            item.add_marker(pytest.mark.sqlite_only(reason))
    sqlite_only_deselect(config, items)
    items.sort(key=_longest_first)  # stable: the rest keep their order


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database a test's store lives in: every test that takes `store` or `db_url` runs
    on SQLite, and on PostgreSQL too when TEST_DATABASE_URL names a server (tests/pg.py)."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    databases = Databases()
    try:
        yield databases
    finally:
        databases.drop_templates()


async def fill_small_demo(store: Store) -> None:
    await fill_demo(store, "small", today=TODAY)


@pytest.fixture(scope="session")
def demo_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite database with the small demo shop, copied for every test that
    needs it."""
    import asyncio

    path = tmp_path_factory.mktemp("demo") / "demo.sqlite3"

    async def build() -> None:
        store = await open_store(sqlite_url(path))
        try:
            await fill_small_demo(store)
        finally:
            await store.close()

    asyncio.run(build())
    return path


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test's own with the small demo shop."""
    if backend == "sqlite":
        path = tmp_path / "bot.sqlite3"
        shutil.copyfile(request.getfixturevalue("demo_db_template"), path)
        yield sqlite_url(path)
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("demo", fill_small_demo))
    try:
        yield url
    finally:
        databases.drop(name)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await open_store(db_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def sandbox_limits() -> Limits:
    """Flood limits are exercised by their own tests; elsewhere they only slow tests down."""
    return Limits(enabled=False)


@pytest.fixture
async def sandbox(sandbox_limits: Limits) -> AsyncIterator[Sandbox]:
    sb = Sandbox(limits=sandbox_limits)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


# The bots running in this process, by the sandbox they poll (its api_base): what the `tg`
# client waits for before it reads replies (SettlingClient).
_RUNNING: dict[str, list[tuple[BotApplication, Store]]] = {}

# How long a bot may take to handle what it was sent before a test's read fails: a bound for a
# hung bot, far above any answer's time on a loaded machine (the watchdog catches the rest).
SETTLE_LIMIT_SECONDS = 60.0


class SettlingClient(SandboxClient):
    """The control client of a test whose bot runs in this process (`bot`, `running_bot`).

    `collect` (so `say` and `press`) reads the bot's replies once the bot has answered every
    update: the sandbox holds none unconfirmed (the bot saves what it fetched in its inbox
    before it confirms it), the inbox holds none unanswered (its mark is written after the
    answer; on PostgreSQL the updates wait there for a chat's claim) and no bot's intake
    holds one. Then every reply is in the sandbox, however long the machine took: no
    time-based quiet window that a loaded machine outlasts (a reply missed) and every
    exchange waits out (time lost). Without a bot in this process it collects as the
    sandbox client does."""

    def __init__(self, url: str, api_base: str) -> None:
        super().__init__(url)
        self._api_base = api_base

    async def settle(self, limit: float = SETTLE_LIMIT_SECONDS) -> bool:
        """Wait until the bots in this process have answered everything sent so far; False
        when none runs here (then nothing tells when they are done)."""
        apps = _RUNNING.get(self._api_base)
        if not apps:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        pause = 0.002
        while True:
            # The cheap look first: the bot shares this event loop, and a look that costs
            # a request and a query each time would slow the very answers it waits for.
            held = sum(_intake(app).unanswered for app, _ in apps)
            pending = unanswered = -1
            if held == 0:
                pending = (await self.stats())["pending_updates"]
            if held == pending == 0:
                unanswered = 0
                for _, store in apps:
                    async with store.connect() as conn:
                        unanswered += (await count_updates(conn))[0]
                if unanswered == 0:
                    return True
            if loop.time() > deadline:
                raise TimeoutError(
                    f"the bot did not settle in {limit} s: {held} updates held,"
                    f" {pending} not fetched, {unanswered} unanswered in the inbox"
                    " (-1: not looked at)"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    async def collect(
        self,
        chat_id: int,
        after_message_id: int,
        timeout: float = 5.0,  # noqa: ASYNC109
        quiet: float = 0.3,
        message_thread_id: int | None = None,
    ) -> list[dict[str, Any]]:
        if not await self.settle():
            return await super().collect(
                chat_id, after_message_id, timeout, quiet, message_thread_id
            )
        replies: list[dict[str, Any]] = []
        last = after_message_id
        while (found := await self._poll(chat_id, last, 0, message_thread_id)) is not None:
            replies.append(found)
            last = found["message_id"]
        return replies


def _intake(app: BotApplication) -> UpdateIntake:
    intake = app.update_queue
    assert isinstance(intake, UpdateIntake)
    return intake


@pytest.fixture
async def tg(sandbox: Sandbox) -> AsyncIterator[SandboxClient]:
    async with SettlingClient(sandbox.url, sandbox.api_base) as client:
        yield client


@pytest.fixture
def bot_environ() -> dict[str, str]:
    """Extra settings for the bot under test; override in a test module to change them."""
    return {}


def bot_settings(sandbox: Sandbox, db_url: str, environ: dict[str, str]) -> Settings:
    """The settings of a bot under test against ``sandbox``, with ``environ`` on top."""
    return load_settings(
        {
            "BOT_TOKEN": sandbox.token,
            "BOT_API_BASE_URL": sandbox.api_base,
            "BOT_API_FILE_URL": sandbox.file_base,
            "DATABASE_URL": db_url,
            "SHOP_NAME": "Demo Shop",
            "LINK_SECRET": LINK_SECRET,
            "MAX_RETRIES": "2",
            # The notice job would speak first at random moments; tests that want it run it.
            "NOTICE_JOB_INTERVAL_SECONDS": "0",
            **environ,
        }
    )


# On PostgreSQL every reply takes its chat's slot of the shared pace (bot/shared.py: one a
# second after a burst of two), so a test that talks to one chat quickly waited about a second
# a reply there and not on SQLite. Modules whose subject is the answers, not their pace,
# override `chat_pace_environ` with this; the pace is test_processes's and the notices'.
NO_CHAT_PACE = {"PER_CHAT_INTERVAL_SECONDS": "0"}


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    """Settings under `bot_environ`: the shop's chat pace unless a module turns it off."""
    return {}


@pytest.fixture
def settings(
    sandbox: Sandbox,
    db_url: str,
    bot_environ: dict[str, str],
    chat_pace_environ: dict[str, str],
) -> Settings:
    return bot_settings(sandbox, db_url, {**chat_pace_environ, **bot_environ})


@asynccontextmanager
async def running_bot(
    settings: Settings, store: Store, clock: Clock
) -> AsyncIterator[BotApplication]:
    """The real application, polling the sandbox, started and stopped as run_polling does it
    (post_init before polling; post_shutdown, the inbox's last flush, after shutdown)."""
    app = build_application(settings, store, now=clock)
    await app.initialize()
    assert app.post_init is not None and app.post_shutdown is not None
    await app.post_init(app)
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=1)
    running = _RUNNING.setdefault(settings.bot_api_base_url, [])
    running.append((app, store))
    try:
        yield app
    finally:
        running.remove((app, store))
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await app.post_shutdown(app)


@pytest.fixture
async def bot(settings: Settings, store: Store, clock: Clock) -> AsyncIterator[BotApplication]:
    async with running_bot(settings, store, clock) as app:
        yield app


async def link_customer(
    tg: SandboxClient, store: Store, chat: int, customer: int, language: str
) -> None:
    """A Telegram user whose chat is already linked to a demo customer and speaks `language`."""
    from store.chats import link_chat, set_chat_language, touch_chat

    await tg.create_user(chat, first_name="Customer", language_code=language)
    async with store.begin() as conn:
        await touch_chat(conn, chat)
        await link_chat(conn, chat, customer)
        await set_chat_language(conn, chat, language)


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages]


def buttons(message: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """A message's inline keyboard as (label, callback data) rows."""
    markup = message.get("reply_markup") or {}
    return [
        [(b["text"], b.get("callback_data", "")) for b in row]
        for row in markup.get("inline_keyboard", [])
    ]

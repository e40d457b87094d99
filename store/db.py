"""Opening the store: engine, connection settings, migrations on start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from store.catalog import ProductIndex
from store.shared import version_of

DEFAULT_URL = "sqlite+aiosqlite:///var/backorder.sqlite3"
MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 10_000
INDEX_CHECK_SECONDS = 5.0
# An inline read waits this long for a locked file (a migration, a checkpoint's restart)
# before it goes through the pool instead: the event loop stands still while it waits.
INLINE_BUSY_TIMEOUT_MS = 20
# While another process holds SQLite's write lock, a writer of this process asks again after
# these pauses (then the last one, again and again) until BUSY_TIMEOUT_MS: SQLite's own busy
# handler sleeps 1, 2, 5, 10, ... 100 ms between its polls, so a writer that has waited a
# while sees the lock free only by chance, and another process's batch loop (store.marks.
# run_batches) takes it back first. Polling on the event loop costs about 30 us a try.
WRITE_POLL_SECONDS = (0.0005, 0.001, 0.002)
# The inline writer never checkpoints the WAL itself (wal_autocheckpoint=0): once the WAL is
# past SQLite's 1,000 pages, every commit copies what others wrote back into the database and
# syncs it, and an inline commit does so on the event loop's thread (an admin import leaves
# tens of MB). The pool's connections and other processes checkpoint as before, and after
# this many inline commits a passive checkpoint runs through the pool, off the loop's thread.
CHECKPOINT_EVERY = 1000
# SQLite's default: a commit that leaves the WAL past this many pages checkpoints it.
AUTOCHECKPOINT_PAGES = 1000

T = TypeVar("T")
log = logging.getLogger(__name__)


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("DATABASE_URL") or DEFAULT_URL


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(sync_conn: Connection, revision: str) -> bool:
    """Upgrade; whether any migration ran."""
    before = MigrationContext.configure(sync_conn).get_current_revision()
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)
    return MigrationContext.configure(sync_conn).get_current_revision() != before


# SQLite's default page cache is 2 MiB. A follow-on batch that tells a few hundred linked
# customers dirties more pages than that (the outbox's and the lines' indexes, at random
# places): they spilled to the WAL before the commit and were written again by it. On the 1M
# store, a 94k-line date change told to every customer spent 4.7 s in SQLite's statements
# with 2 MiB, 4.0 s with 16 MiB (its outbox inserts 1.6 s -> 1.0 s); with the WAL left
# unchecked, 11 s against 4.3 s. A cache grows only with the pages its connection touches.
WRITER_CACHE_KIB = 16384


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    _writer_pragmas(dbapi_conn, BUSY_TIMEOUT_MS)


def _writer_pragmas(dbapi_conn: Any, busy_timeout_ms: int) -> None:
    # WAL lets the bot's readers run while an import writes; foreign keys are off by
    # default in SQLite; the busy timeout makes concurrent writers wait instead of fail.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    cur.close()


# Set by `Store.background`: this task's writes wait while a writer of the foreground (an
# update's handling) is queued for this process's writer turn.
_BACKGROUND: ContextVar[bool] = ContextVar("store_background", default=False)


class _WriterTurns:
    """This process's SQLite writers, one at a time: FIFO, but a waiting writer of the
    foreground (an update's handler, the inbox) goes before every waiting writer of the
    background (the scheduler's follow-on batches and notice rounds). A background batch
    between two of an update's writes would hold the update for the whole batch."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),
            deque(),
        )

    def locked(self) -> bool:
        return self._held

    @property
    def foreground_waiting(self) -> int:
        return sum(1 for f in self._waiting[0] if not f.done())

    async def acquire(self) -> None:
        queue = self._waiting[1 if _BACKGROUND.get() else 0]
        if not self._held and not any(self._waiting):
            self._held = True
            return
        turn = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._pass_on()  # handed the turn while being cancelled: hand it on
            else:
                queue.remove(turn)
            raise

    def release(self) -> None:
        self._pass_on()

    def _pass_on(self) -> None:
        for queue in self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: now the waiter's
                    return
        self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _write_poll(tries: int) -> float:
    return WRITE_POLL_SECONDS[min(tries, len(WRITE_POLL_SECONDS) - 1)]


def _is_busy(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


async def _begin_immediate_polling(conn: AsyncConnection, *, checkpoint: bool = True) -> None:
    """BEGIN IMMEDIATE on a pooled SQLite connection, the lock polled for at WRITE_POLL_SECONDS
    (SQLite's busy handler switched off meanwhile) until BUSY_TIMEOUT_MS: a waiting writer
    of this process and one of another process ask as often as each other. ``checkpoint``
    False: this transaction's commit leaves the WAL to others (see Store.begin)."""
    pages = AUTOCHECKPOINT_PAGES if checkpoint else 0
    info = conn.sync_connection.connection.info if conn.sync_connection else {}
    if info.get("wal_autocheckpoint", AUTOCHECKPOINT_PAGES) != pages:
        # Kept with the pooled connection: set again only when the last user wanted otherwise.
        await conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={pages}")
        info["wal_autocheckpoint"] = pages
    await conn.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        tries = 0
        while True:
            try:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(_write_poll(tries))
            tries += 1
    finally:
        # Statements inside the transaction never wait for the lock (it is held); the
        # connection's other uses get the busy timeout back.
        await conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class Store:
    """The database handle the bot and the tools share. Holds no domain state."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self.engine = engine
        self.url = url
        self._index: ProductIndex | None = None
        self._index_lock = asyncio.Lock()
        self._index_checked: tuple[int, float] = (-1, 0.0)  # (writes, monotonic time)
        self._catalog_version = -1  # store_versions' 'catalog' when last checked (PostgreSQL)
        # PostgreSQL: while a listener hears the catalog trigger's notifications (bot.shared
        # counts them here), the version row is read only after one came.
        self.catalog_listening = False
        self.catalog_heard = 0
        self._catalog_seen = -1  # catalog_heard when the version was last read
        self.writes = 0
        # SQLite takes one writer at a time. Left to its busy handler, writers of this process
        # poll the lock with sleeps of up to 100 ms and wait in no order: under a burst of
        # updates a one-row write took 60 ms (bench). Queued here first, they run one after
        # another at once; another process's lock (an admin import) is polled for
        # (`_file_lock`), foreground first (`_WriterTurns`).
        self._one_writer = _WriterTurns() if engine.dialect.name == "sqlite" else None
        self._inline = _inline_engine(url)
        self._inline_writer = _inline_engine(url, writer=True)
        self._inline_commits = 0
        self._checkpoint: asyncio.Task[None] | None = None
        self._batch_thread: ThreadPoolExecutor | None = None

    @staticmethod
    @contextmanager
    def background() -> Iterator[None]:
        """Writes made inside (and in tasks started inside) give way to the foreground's:
        on SQLite, where this process's writers take turns, each waits until no other writer
        outside a `background` block is queued. Nothing changes on PostgreSQL."""
        token = _BACKGROUND.set(True)
        try:
            yield
        finally:
            _BACKGROUND.reset(token)

    async def _file_lock(self) -> Connection | None:
        """On a SQLite file: a connection of the inline writer in a BEGIN IMMEDIATE
        transaction, that is SQLite's write lock, asked for again after WRITE_POLL_SECONDS
        while another process holds it; the busy error after BUSY_TIMEOUT_MS. None when
        this is not a SQLite file, or the file cannot be opened here (the pool then tries)."""
        if self._inline_writer is None:
            return None
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        tries = 0
        while True:
            try:
                return self._file_lock_once()
            except OperationalError:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(_write_poll(tries))
            tries += 1

    def _file_lock_once(self) -> Connection | None:
        """One try for `_file_lock`: the connection holding the lock, None when the file
        cannot be opened here; SQLite's busy error while another connection holds it."""
        assert self._inline_writer is not None
        inline = self._inline_writer.connect()
        try:
            inline.begin()  # BEGIN IMMEDIATE: the write lock now, or "locked" at once
            return inline
        except OperationalError as exc:
            inline.close()
            if not _is_busy(exc):
                return None
            raise
        except BaseException:
            inline.close()
            raise

    @asynccontextmanager
    async def begin(
        self, *, counted: bool = True, checkpoint: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed on success, rolled back on error.

        ``counted=False``: not counted in `writes`, for rows no reader caches (the bot's
        update inbox, a chat's own state written by the update that holds it).

        ``checkpoint=False`` (SQLite): the commit does not checkpoint the WAL, for a loop of
        batches that checkpoints it itself between them (store.marks.run_sized_batches): past
        1,000 WAL pages every commit copied the pages back and synced both files, 30-45 ms a
        batch on the 1M-order store, with the loop waiting.

        Every check-then-write inside is atomic against every other transaction, on both
        backends, as long as it takes its lock before it reads: on SQLite the transaction
        begins IMMEDIATE, with the file's write lock (the driver would begin it only at the
        first write, so what was read before came from outside the transaction, and a
        writer of another `Store` or process could slip in between); on PostgreSQL, where
        READ COMMITTED lets two transactions read the same rows, the step takes a row lock
        (SELECT ... FOR UPDATE, which is nothing on SQLite) or an advisory lock."""
        try:
            if self._one_writer is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._one_writer, self.engine.begin() as conn:
                await _begin_immediate_polling(conn, checkpoint=checkpoint)
                yield conn
        finally:
            # Counted once the transaction has ended, so a reader that saw the count before
            # it knows that what it read may be older than this transaction.
            if counted:
                self.writes += 1

    @asynccontextmanager
    async def begin_small(self, *, counted: bool = True) -> AsyncIterator[AsyncConnection]:
        """`begin` for a transaction of a few one-row statements and nothing else awaited
        (a chat's misses, its pending question): on a SQLite file, on the event loop's thread,
        the file's write lock polled for while another process holds it (`_file_lock`); else
        through the pool. Through aiosqlite the begin, statement and commit were about
        1.5 ms of CPU in hand-offs; on the loop's thread the whole write takes about 0.1 ms.
        Through the pool, a write that met another process's lock waited in SQLite's busy
        handler, and every writer of this process waited behind it: 3.3 s at the median
        during an admin import on the 1M-order store (bench_admin_stream --trace)."""
        inline: Connection | None = None
        if self._inline_writer is not None:
            assert self._one_writer is not None
            await self._one_writer.acquire()
            try:
                inline = await self._file_lock()
            except BaseException:
                self._one_writer.release()
                raise
            if inline is None:
                self._one_writer.release()
        if inline is None:
            async with self.begin(counted=counted) as conn:
                yield conn
            return
        try:
            yield cast(AsyncConnection, _InlineConnection(inline))
            inline.commit()
        except BaseException:
            inline.rollback()
            raise
        finally:
            inline.close()
            assert self._one_writer is not None
            self._one_writer.release()
            if counted:
                self.writes += 1
        self._inline_commits += 1
        if self._inline_commits % CHECKPOINT_EVERY == 0 and self._checkpoint is None:
            self._checkpoint = asyncio.get_running_loop().create_task(self._checkpoint_wal())

    async def run_batch(self, batch: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """``batch(conn)`` in a write transaction of its own, committed when it returns: one
        batch of the follow-on work (store.marks.run_sized_batches). Its commit leaves the WAL
        to the batch loop's checkpoints.

        On a SQLite file the whole batch runs on a synchronous connection in this store's
        batch thread, so ``batch`` may await nothing but the connection's own methods.
        Through aiosqlite each of a batch's 20-30 statements went to the driver's thread and
        back through the event loop, with the write lock held across every hop: a batch of
        50 ms in backorder-admin held it 130-370 ms in the bot, whose loop was busy with
        updates, and cost 20 ms of hand-offs in the admin command too. The loop runs on
        meanwhile; this process's other writers wait for their turn as for any writer.
        Elsewhere (PostgreSQL, a database in memory): `begin`."""
        if self._inline_writer is None:
            async with self.begin(checkpoint=False) as conn:
                return await batch(conn)
        assert self._one_writer is not None
        if self._batch_thread is None:
            self._batch_thread = ThreadPoolExecutor(1, thread_name_prefix="store-batches")
        async with self._one_writer:
            done = asyncio.get_running_loop().run_in_executor(
                self._batch_thread, self._batch_inline, batch
            )
            try:
                result = await asyncio.shield(done)
            except asyncio.CancelledError:
                # The thread holds the write lock until its batch ends: the turn passes on
                # only then, or this process's next writer would meet its own lock.
                await asyncio.wait([done])
                raise
            finally:
                self.writes += 1
        if result is _NO_FILE:
            async with self.begin(checkpoint=False) as conn:
                return await batch(conn)
        return cast(T, result)

    def _batch_inline(self, batch: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> Any:
        """In the batch thread: SQLite's write lock polled for as `_file_lock` does (the
        thread may sleep), then the batch run to its end and committed."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        tries = 0
        while True:
            try:
                conn = self._file_lock_once()
                break
            except OperationalError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(_write_poll(tries))
            tries += 1
        if conn is None:
            return _NO_FILE
        try:
            result = _run_to_end(batch(cast(AsyncConnection, _InlineConnection(conn))))
            conn.commit()
            return result
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    async def _checkpoint_wal(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.warning("a passive WAL checkpoint failed; the next one tries again", exc_info=True)
        finally:
            self._checkpoint = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; anything written without commit is rolled back."""
        async with self.engine.connect() as conn:
            yield conn

    async def read(self, query: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """Run a read-only store function (one that only executes statements): on a SQLite
        file, on the calling thread; elsewhere, or while the file is locked, through the pool.

        Through aiosqlite a statement is four hand-offs to the connection's thread and back,
        and the checkout and reset two more: about 0.6 ms of CPU for a one-row read, and under
        load each hand-off waits for the busy event loop. The same read of SQLite on the loop's
        own thread takes about 45 us, and in WAL mode a reader does not wait for writers."""
        if self._inline is not None:
            try:
                with self._inline.connect() as conn:
                    # The function only awaits the connection's execute, which returns at
                    # once: it runs to the end in one step.
                    step = query(cast(AsyncConnection, _InlineConnection(conn)))
                    return _run_to_end(step)
            except OperationalError:
                pass  # locked: wait for it through the pool
        async with self.connect() as conn:
            return await query(conn)

    async def product_index(self, *, current: bool = False) -> ProductIndex:
        """The fuzzy product index, rebuilt when the catalog has changed since last built.

        Whether it changed is asked of the database after any write of this process, else
        at most every INDEX_CHECK_SECONDS (another process's import shows within that): the
        question scans the catalog's index, and every stock question would ask it.
        `current`: ask now, whatever was heard. Before the bot says a product does not exist:
        another process's rename is heard a moment after its commit, and a customer who read
        the new name in the shop may already be asking."""
        index = self._index
        version = self._catalog_version
        heard = self.catalog_heard
        if (
            index is not None
            and not current
            and self.engine.dialect.name == "postgresql"
            and not (self.catalog_listening and heard == self._catalog_seen)
        ):
            # Several bot processes: another's write of the catalog shows at the next read
            # (a trigger moves the version in the writer's transaction), one key look-up;
            # none while the trigger's notifications are heard and none came (a missed one
            # shows within INDEX_CHECK_SECONDS all the same, below).
            async with self.engine.connect() as conn:
                version = await version_of(conn, "catalog")
            if version == self._catalog_version:
                self._catalog_seen = heard
        if (
            index is not None
            and not current
            and version == self._catalog_version
            and self._index_checked[0] == self.writes
            and time.monotonic() - self._index_checked[1] < INDEX_CHECK_SECONDS
        ):
            return index
        async with self._index_lock:
            writes, at, heard = self.writes, time.monotonic(), self.catalog_heard
            async with self.engine.connect() as conn:
                moved = False
                if conn.dialect.name == "postgresql":
                    latest = await version_of(conn, "catalog")
                    # Rebuilt whatever the catalog's own version says (a writer that left
                    # updated_at alone changed it all the same).
                    moved = latest != self._catalog_version
                    self._catalog_version = latest
                    self._catalog_seen = heard
                if self._index is None:
                    self._index = await ProductIndex.load(conn)
                else:
                    await self._index.refresh(conn, force=moved)
            self._index_checked = (writes, at)
            return self._index

    def catalog_changed(self) -> None:
        """Another transaction wrote the catalog (or may have, unheard): read its version."""
        self.catalog_heard += 1

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        if self._batch_thread is not None:
            self._batch_thread.shutdown()
        for inline in (self._inline, self._inline_writer):
            if inline is not None:
                inline.dispose()
        await self.engine.dispose()


# The batch thread could not open the file (Store.run_batch): the pool runs the batch instead.
_NO_FILE = object()


class _InlineConnection:
    """What a store function uses of an AsyncConnection, on a synchronous one: AsyncConnection.
    execute returns a buffered result that is read without awaiting, which is what the
    synchronous connection returns."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        return self._conn.exec_driver_sql(statement, parameters)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self._conn, *args, **kwargs)

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.scalar(statement, parameters)

    async def scalars(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.scalars(statement, parameters)

    def begin_nested(self) -> _InlineSavepoint:
        return _InlineSavepoint(self._conn)


class _InlineSavepoint:
    """``async with conn.begin_nested():`` on the synchronous connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> None:
        self._savepoint = self._conn.begin_nested()

    async def __aexit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            self._savepoint.commit()
        else:
            self._savepoint.rollback()


def _run_to_end(step: Coroutine[Any, Any, T]) -> T:
    try:
        step.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    step.close()
    raise RuntimeError("an inline step waited for something other than its statements")


# A statement's parameters are what customers gave (e-mail addresses, postcodes, what they
# wrote): SQLAlchemy leaves them out of its errors' text, which the bot's log shows.
HIDE_PARAMETERS = True


def _inline_engine(url: str, *, writer: bool = False) -> Engine | None:
    """The synchronous engine for `Store.read` (or `Store.begin_small`, ``writer``) on a
    SQLite file; None for anything else (an in-memory database is private to its connection,
    a server is not on this thread)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if "memory" in str(parsed.query.get("mode", "")):
        return None
    # The writer leaves transactions to SQLAlchemy (the driver's own implicit BEGIN comes only
    # before the first change, and savepoints misbehave): it begins them IMMEDIATE, so the
    # write lock is had at the start or not at all.
    args: dict[str, Any] = {"check_same_thread": False}
    if writer:
        args["isolation_level"] = None
    engine = create_engine(
        parsed.set(drivername="sqlite"), connect_args=args, hide_parameters=HIDE_PARAMETERS
    )
    event.listen(engine, "connect", _on_inline_write_connect if writer else _on_inline_connect)
    if writer:
        event.listen(engine, "begin", _begin_immediate)
    return engine


def _on_inline_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.execute(f"PRAGMA busy_timeout={INLINE_BUSY_TIMEOUT_MS}")
    cur.close()


def _on_inline_write_connect(dbapi_conn: Any, _record: Any) -> None:
    # No wait at all: while another process writes, the event loop must run on (that
    # process may be this one's own admin task, whose statements need the loop); the lock is
    # polled for (Store._file_lock). No checkpoint on the loop's thread (CHECKPOINT_EVERY).
    _writer_pragmas(dbapi_conn, busy_timeout_ms=0)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine_for(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, hide_parameters=HIDE_PARAMETERS)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    return create_async_engine(url, pool_pre_ping=True, hide_parameters=HIDE_PARAMETERS)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` in one transaction.

    On SQLite, Alembic's batch mode rebuilds a table by copy, drop and rename; with foreign
    keys enforced the drop fails as soon as rows refer to the table. Enforcement is paused
    for the migration (it can only be switched outside a transaction) and the rows it may
    have broken are checked before commit instead (`_sqlite_upgrade`).
    """
    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            if sqlite:
                await _sqlite_upgrade(conn, revision)
            else:
                await conn.run_sync(_upgrade, revision)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()


# What SQLite's authorizer names as written: the table is the first argument for rows and
# whole tables, the second for an ALTER TABLE (the first is the schema) and for an index.
_WRITES_FIRST = frozenset(
    {
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_DROP_TABLE,
    }
)
_WRITES_SECOND = frozenset(
    {sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_DROP_INDEX}
)
_SCHEMA_ROWS = text("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master")
_REFERENCES = text(
    'SELECT m.name, f."table" FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f'
    " WHERE m.type = 'table'"
)
_FOREIGN_KEY_CHECK = text("SELECT * FROM pragma_foreign_key_check(:table)")


async def _sqlite_upgrade(conn: AsyncConnection, revision: str) -> None:
    """Upgrade with foreign keys off, then check the foreign keys of the tables the migrations
    touched and of the tables that refer to those.

    The whole database's check read every row under the write lock at the first start after
    a new migration (1.8 s on a quiet machine, 6.7-38 s under load, on the 1M-order store),
    where that migration had created one empty table (0.03 s now). What a migration touched
    is found out, not declared: SQLite's authorizer names every table a statement writes
    (rows, tables, indexes; a data migration changes no schema), and a changed sqlite_master
    row names the rest (a renamed table's new name)."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    written: set[str] = set()

    def note(action: int, first: str | None, second: str | None, *_: str | None) -> int:
        table = first if action in _WRITES_FIRST else second if action in _WRITES_SECOND else None
        if table:
            written.add(table)
        return sqlite3.SQLITE_OK

    before = set((await conn.execute(_SCHEMA_ROWS)).all())
    await driver.set_authorizer(note)
    try:
        migrated = await conn.run_sync(_upgrade, revision)
    finally:
        await driver.set_authorizer(None)
    if not migrated:
        return
    after = set((await conn.execute(_SCHEMA_ROWS)).all())
    touched = {name.lower() for name in written | {row.tbl_name for row in before ^ after}}
    broken: list[Any] = []
    for table in await _tables_to_check(conn, touched):
        broken += (await conn.execute(_FOREIGN_KEY_CHECK, {"table": table})).all()
    if broken:
        raise RuntimeError(f"migration to {revision} broke foreign keys: {broken[:5]}")


async def _tables_to_check(conn: AsyncConnection, touched: set[str]) -> list[str]:
    """The tables whose foreign keys may be broken when the tables named ``touched`` (lower
    case: SQLite's names ignore case) were written, created, rebuilt, renamed or dropped:
    those among them that have foreign keys, and every table that refers to one of them (a
    parent's rows may be gone from under its children)."""
    rows = (await conn.execute(_REFERENCES)).all()
    return sorted({child for child, parent in rows if {child.lower(), parent.lower()} & touched})


_SERIAL_COLUMNS = """
SELECT c.table_name, c.column_name, pg_get_serial_sequence(
    quote_ident(c.table_schema) || '.' || quote_ident(c.table_name), c.column_name)
FROM information_schema.columns AS c
WHERE c.table_schema = current_schema()
  AND (c.column_default LIKE 'nextval(%' OR c.is_identity = 'YES')
ORDER BY c.table_name, c.column_name
"""


async def sync_sequences(conn: AsyncConnection) -> None:
    """After rows were inserted with explicit ids (the demo data), set each serial column's
    sequence past the largest id in its table, so the next row the database numbers does not
    take an id already used (on PostgreSQL a sequence moves only when it hands out a value).
    Nothing to do on SQLite, which numbers a row after the table's largest id."""
    if conn.dialect.name != "postgresql":
        return
    quoted = conn.dialect.identifier_preparer
    for table, column, sequence in (await conn.execute(text(_SERIAL_COLUMNS))).all():
        if sequence is None:
            continue
        await conn.execute(
            text(
                f"SELECT setval(:seq, COALESCE((SELECT max({quoted.quote(column)})"
                f" FROM {quoted.quote(table)}), 0) + 1, false)"
            ),
            {"seq": sequence},
        )


async def open_store(url: str | None = None, *, migrate_schema: bool = True) -> Store:
    """Open the store at ``url`` (or DATABASE_URL, or the default) and bring its schema up
    to date."""
    resolved = database_url(url)
    engine = create_engine_for(resolved)
    if migrate_schema:
        await migrate(engine)
    return Store(engine, resolved)

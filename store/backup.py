"""``backorder-admin backup PATH``: an online copy of a SQLite store, taken while the bot runs.

SQLite's backup API copies the database page by page under a read transaction, so the copy is
one consistent moment even while the bot writes (in WAL mode a reader does not block writers);
copying the file with cp could catch it between the main file and its -wal file. The copy is
written beside PATH first and renamed when whole and checked, so PATH is never half a database.
PostgreSQL is backed up with its own tool, pg_dump (README).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from store.errors import StoreError


def backup_sqlite(url: str, dest: Path) -> int:
    """Copy the SQLite store at ``url`` to ``dest`` (which must not exist): the pages copied."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise StoreError(
            f"backup copies a SQLite store; this one is {parsed.get_backend_name()}:"
            " use pg_dump (see the README)"
        )
    source = parsed.database
    if not source or source == ":memory:" or not Path(source).is_file():
        raise StoreError(f"no SQLite database at {source or '(none)'}")
    if dest.exists():
        raise StoreError(f"{dest} exists; not overwritten")
    if not dest.parent.is_dir():
        raise StoreError(f"{dest.parent} is not a directory")
    partial = dest.with_name(dest.name + ".partial")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as e:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed: {e}") from None
    finally:
        src.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise StoreError(f"the copy failed its check: {check}")
    os.replace(partial, dest)
    return pages

"""Errors the store raises for bad requests (the caller shows them; nothing was written)."""

from __future__ import annotations


class StoreError(Exception):
    """A request the store refuses; the transaction should be rolled back."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


# PostgreSQL's SQLSTATEs for a write that met another's lock: lock_not_available,
# deadlock_detected, serialization_failure.
_BUSY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


def is_busy(error: BaseException) -> bool:
    """Whether a database error means another writer held what this one needed (SQLite's
    "database is locked" once its busy timeout ran out), not that the request was wrong."""
    orig = getattr(error, "orig", None) or error
    if getattr(orig, "pgcode", None) in _BUSY_SQLSTATES or getattr(orig, "sqlstate", None) in (
        _BUSY_SQLSTATES
    ):
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


def db_reason(error: BaseException) -> str:
    """The driver's own one-line reason, without SQLAlchemy's statement and parameters."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__

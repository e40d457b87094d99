"""Errors the store raises for bad requests (the caller shows them; nothing was written)."""

from __future__ import annotations


class StoreError(Exception):
    """A request the store refuses; the transaction should be rolled back."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass

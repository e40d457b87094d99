"""The backorder store: schema, migrations, queries and the domain rules.

Imports nothing of ``bot`` or Telegram.
"""

from store.db import DEFAULT_URL, Store, database_url, open_store

__all__ = ["DEFAULT_URL", "Store", "database_url", "open_store"]

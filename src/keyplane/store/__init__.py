"""Storage of accounts and keys: the Store protocol and its implementations."""

from keyplane.store.memory import MemoryStore
from keyplane.store.protocol import Store
from keyplane.store.sql import SqlStore, open_store

__all__ = ["MemoryStore", "SqlStore", "Store", "open_store"]

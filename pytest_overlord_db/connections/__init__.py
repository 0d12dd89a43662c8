"""Per-test connections that never leak a test's writes, for each driver; the relay that makes new asyncpg
connections cheap. Usable without pytest."""
from __future__ import annotations

from .aio import ASYNC_LOST, AsyncConnections
from .sync import RESET_SESSION, SAVEPOINT, SYNC_LOST, SavepointConnection, connect_sync

__all__ = ["ASYNC_LOST", "AsyncConnections", "RESET_SESSION", "SAVEPOINT", "SYNC_LOST", "SavepointConnection",
           "connect_sync"]

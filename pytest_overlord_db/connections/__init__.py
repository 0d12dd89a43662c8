"""Per-test connections that never leak a test's writes, for each driver; the kept backends (handoff, or the
relay) that make new asyncpg connections cheap. Usable without pytest."""
from __future__ import annotations

from .aio import ASYNC_LOST, AsyncConnections
from .sync import RESET_SESSION, SAVEPOINT, SYNC_LOST, SavepointConnection, connect_sync

__all__ = ["ASYNC_LOST", "AsyncConnections", "RESET_SESSION", "SAVEPOINT", "SYNC_LOST", "SavepointConnection",
           "connect_sync"]

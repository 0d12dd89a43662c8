"""Per-test connections that never leak a test's writes, for each driver; the relay that makes new asyncpg
connections cheap. Usable without pytest."""
from __future__ import annotations

from .aio import AsyncConnections
from .sync import RESET_SESSION, SAVEPOINT, SavepointConnection, connect_sync

__all__ = ["AsyncConnections", "RESET_SESSION", "SAVEPOINT", "SavepointConnection", "connect_sync"]

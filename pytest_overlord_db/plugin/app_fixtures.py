"""Fixtures in the shapes application code expects: a pool (asyncpg's), psycopg 3 connections.

Each is a view of a transactional fixture's connection, or a sibling of it: the same
work database, the same rollback after the test, the same commit detection.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from ..connections.pool import OverlordPool


@pytest.fixture
def overlord_pool(overlord_db: Any) -> Iterator[OverlordPool]:
    """An ``asyncpg.Pool``-shaped object handing out ``overlord_db``'s connection; each acquire a savepoint."""
    pool = OverlordPool(overlord_db)
    yield pool
    pool.terminate()  # a reference the application kept fails clearly in a later test, never reaches this one's connection

"""Fixtures in the shapes application code expects: a pool (asyncpg's), psycopg 3 connections.

Each is a view of a transactional fixture's connection, or a sibling of it: the same
work database, the same rollback after the test, the same commit detection.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from ..connections.pool import OverlordPool
from ..runtime import ServerInfo
from . import errors, state


def committed(fixture: str) -> str:
    """The psycopg2 fixture's commit report, naming ``fixture``."""
    return errors.SYNC_COMMITTED.replace("overlord_db_sync", fixture, 1)


@pytest.fixture
def overlord_pool(overlord_db: Any) -> Iterator[OverlordPool]:
    """An ``asyncpg.Pool``-shaped object handing out ``overlord_db``'s connection; each acquire a savepoint."""
    pool = OverlordPool(overlord_db)
    yield pool
    pool.terminate()  # a reference the application kept fails clearly in a later test, never reaches this one's connection


def _psycopg(request: pytest.FixtureRequest, kind: str, name: str) -> Iterator[Any]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        errors.fail_test(f"{name} needs psycopg 3: pip install 'pytest-overlord-db[psycopg]' (or psycopg[binary]).")
    isolation = state.get(request.config).stack()
    conn = errors.guarded(lambda: isolation.begin_psycopg(kind))
    yield conn
    if not errors.guarded(lambda: isolation.end_psycopg(conn)):
        errors.fail_test(committed(name))


@pytest.fixture
def overlord_psycopg(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A psycopg 3 connection to the migrated database, in a transaction rolled back after the test."""
    yield from _psycopg(request, "sync", "overlord_psycopg")


@pytest.fixture
def overlord_psycopg_async(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A ``psycopg.AsyncConnection``, the same way; usable from any event loop scope."""
    yield from _psycopg(request, "async", "overlord_psycopg_async")

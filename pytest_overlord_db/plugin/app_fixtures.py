"""Fixtures in the shapes application code expects: a pool (asyncpg's), psycopg 3 connections.

Each is a view of a transactional fixture's connection, or a sibling of it: the same
work database, the same rollback after the test, the same commit detection.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from .. import urls
from ..connections.pool import OverlordPool
from ..isolation import Isolation
from . import errors


def committed(fixture: str) -> str:
    """The psycopg2 fixture's commit report, naming ``fixture``."""
    return errors.SYNC_COMMITTED.replace("overlord_db_sync", fixture, 1)


@pytest.fixture
def overlord_pool(overlord_db: Any) -> Iterator[OverlordPool]:
    """An ``asyncpg.Pool``-shaped object handing out ``overlord_db``'s connection; each acquire a savepoint."""
    pool = OverlordPool(overlord_db)
    yield pool
    pool.terminate()  # a reference the application kept fails clearly in a later test, never reaches this one's connection


def _psycopg(isolation: Isolation, kind: str, name: str) -> Iterator[Any]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        errors.fail_test(f"{name} needs psycopg 3: pip install 'pytest-overlord-db[psycopg]' (or psycopg[binary]).")
    conn = errors.guarded(lambda: isolation.begin_psycopg(kind))
    yield conn
    if not errors.guarded(lambda: isolation.end_psycopg(conn)):
        errors.fail_test(committed(name))


@pytest.fixture
def overlord_psycopg(_overlord_stack: Isolation) -> Iterator[Any]:
    """A psycopg 3 connection to the migrated database, in a transaction rolled back after the test."""
    yield from _psycopg(_overlord_stack, "sync", "overlord_psycopg")


@pytest.fixture
def overlord_psycopg_async(_overlord_stack: Isolation) -> Iterator[Any]:
    """A ``psycopg.AsyncConnection``, the same way; usable from any event loop scope."""
    yield from _psycopg(_overlord_stack, "async", "overlord_psycopg_async")


def _sqlalchemy(name: str) -> Any:
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        errors.fail_test(f"{name} needs SQLAlchemy 2: pip install 'pytest-overlord-db[sqlalchemy]'.")
    from ..connections import sqla

    return sqla


@pytest.fixture
def overlord_sqla_engine(overlord_db_sync: Any) -> Any:
    """A SQLAlchemy Engine over ``overlord_db_sync``'s connection: commits act on a savepoint."""
    # A view of the engine kept with the connection: the listeners and execution options a test sets are its own.
    return _sqlalchemy("overlord_sqla_engine").sync_engine(overlord_db_sync).execution_options()


@pytest.fixture
def overlord_sqla_session(overlord_sqla_engine: Any) -> Iterator[Any]:
    """A Session joined to the test's transaction (``join_transaction_mode="create_savepoint"``)."""
    session, connection = _sqlalchemy("overlord_sqla_session").sync_session(overlord_sqla_engine)
    yield session
    session.close()
    connection.close()


@pytest.fixture(scope="session")
def _overlord_sqla_async_engines(_overlord_stack: Isolation) -> Any:
    import asyncpg

    runtime = _overlord_stack.runtime
    assert runtime is not None  # the URL read when it is used: the work database may have been made again
    return _sqlalchemy("overlord_sqla_async_engine").AsyncEngines(
        first=lambda: asyncpg.connect(urls.normalize(runtime.work_db_url())))


@pytest.fixture
def overlord_sqla_async_engine(overlord_db: Any, _overlord_sqla_async_engines: Any) -> Any:
    """A SQLAlchemy AsyncEngine over ``overlord_db``'s connection: each transaction a savepoint.

    A view of one engine a process (its listeners and execution options this test's own), with a pool
    of its own."""
    return _overlord_sqla_async_engines.engine_for(overlord_db)


@pytest.fixture
def overlord_sqla_async_session(overlord_sqla_async_engine: Any) -> Iterator[Any]:
    """An AsyncSession on that engine, joined to the test's transaction; closed after the test."""
    sqla = _sqlalchemy("overlord_sqla_async_session")
    session = sqla.async_session(overlord_sqla_async_engine)
    yield session
    sqla.close_async_session(session, overlord_sqla_async_engine)

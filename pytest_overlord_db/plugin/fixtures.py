"""The user's fixtures. Thin: the lifecycle is in ``isolation``, the stack in ``runtime``."""
from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
import pytest_asyncio

from ..connections import SavepointConnection
from ..errors import OverlordError
from ..runtime import FreshDatabase, ServerInfo
from . import errors, keep, loops, state


@pytest.fixture(scope="session")
def overlord_server(request: pytest.FixtureRequest) -> Iterator[ServerInfo]:
    """Session info: backend, server version, the template's name, URL and cache key."""
    plugin = state.get(request.config)
    error: OverlordError | None = None
    try:
        _, info = plugin.stack().ensure_runtime()
    except OverlordError as exc:
        error = exc
    if error is not None:  # outside the except block, so no chained traceback is shown
        errors.fail_setup(request.config, error)
    yield info
    plugin.shutdown()


@pytest.fixture
def overlord_db_sync(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[SavepointConnection]:
    """A psycopg2 connection to the migrated database, in a transaction rolled back after the test."""
    isolation = state.get(request.config).stack()
    conn = errors.guarded(isolation.begin_sync)
    yield conn
    if not errors.guarded(lambda: isolation.end_sync(conn)):
        errors.fail_test(errors.SYNC_COMMITTED)


def _overlord_db_in(scope: loops.LoopScope) -> Any:
    """The asyncpg fixture for tests whose event loop has ``scope``: it runs in that loop."""

    @pytest_asyncio.fixture(name=f"_overlord_db_{scope}_loop", loop_scope=scope)
    async def fixture(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Any:
        isolation = state.get(request.config).stack()
        error: OverlordError | None = None
        try:
            test = await isolation.begin_async(keep=scope != "function")
        except OverlordError as exc:
            error = exc
        if error is not None:
            errors.fail_test(f"overlord-db: {error}")
        if test.keep and test.new:
            # Close it while its loop still exists: when the loop's scope ends.
            loop = asyncio.get_running_loop()
            loops.scope_node(request, scope).addfinalizer(lambda: isolation.close_loop(loop))

        # A plain (sync) finalizer, not an async generator: the relayed case needs no
        # await at all, and pytest-asyncio would spend a whole loop run on it.
        def end() -> None:
            if not errors.guarded(lambda: isolation.end_async(test)):
                errors.fail_test(errors.ASYNC_COMMITTED)

        request.addfinalizer(end)
        return test.conn

    return fixture


_overlord_db_function_loop = _overlord_db_in("function")
_overlord_db_class_loop = _overlord_db_in("class")
_overlord_db_module_loop = _overlord_db_in("module")
_overlord_db_package_loop = _overlord_db_in("package")
_overlord_db_session_loop = _overlord_db_in("session")


@pytest.fixture
def overlord_db(request: pytest.FixtureRequest) -> Any:
    """An asyncpg connection to the migrated database, in a transaction rolled back after the test.

    Nested ``conn.transaction()`` blocks in the code under test become savepoints. The connection
    lives in the test's own event loop, whatever its loop scope; async fixtures built on it must
    run in that loop too (give them the ``loop_scope`` of the tests that use them).
    """
    return request.getfixturevalue(f"_overlord_db_{loops.test_loop_scope(request.node)}_loop")


@pytest.fixture
def overlord_fresh_db(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[FreshDatabase]:
    """A new database cloned from the template: commit, use several connections; dropped after the test."""
    isolation = state.get(request.config).stack()
    db = errors.guarded(isolation.fresh_db)
    try:
        yield db
    finally:
        assert isolation.runtime is not None
        failures = [request.node.nodeid] if keep.failed(request.node) else []
        if not keep.finish(request.config, isolation.runtime, db.name, db.url, failures):
            isolation.runtime.release_fresh_db(db)  # dropped (WITH FORCE) in the background

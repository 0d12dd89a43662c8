"""The user's fixtures. Thin: the lifecycle is in ``isolation``, the stack in ``runtime``."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_asyncio

from ..connections import SavepointConnection
from ..errors import OverlordError
from ..isolation import AsyncTest, Isolation
from ..runtime import FreshDatabase, ServerInfo
from . import errors, keep, loops, state


def register(config: pytest.Config) -> None:
    """Registers ``_overlord_stack``, the session fixture under every per-test one, made for this run's config.

    It is a closure over ``config`` so that it needs no ``request``: pytest checks a cached fixture's
    arguments on every test that uses it, and for ``request`` (``pytestconfig`` asks for it too) it builds a
    new FixtureDef each time, signature inspection included, which is about a tenth of a hand-written
    fixture's whole cost. (A method of a per-run object would do too, but pytest 9 deprecates wider-scoped
    fixtures as instance methods.)"""

    @pytest.fixture(scope="session", name="_overlord_stack")
    def stack() -> Iterator[Isolation]:
        """The process's test databases, started: what the per-test fixtures ask for."""
        plugin = state.get(config)
        error: OverlordError | None = None
        try:
            isolation = plugin.stack()
            isolation.ensure_runtime()
        except OverlordError as exc:
            error = exc
        if error is not None:  # outside the except block, so no chained traceback is shown
            errors.fail_setup(config, error)
        yield isolation
        plugin.shutdown()

    # pytest finds a plugin object's fixtures on its type: a class of its own for this run holds it.
    config.pluginmanager.register(type("OverlordStack", (), {"_overlord_stack": stack}), "overlord-db-stack")


@pytest.fixture(scope="session")
def overlord_server(_overlord_stack: Isolation) -> ServerInfo:
    """Session info: backend, server version, the template's name, URL and cache key."""
    assert _overlord_stack.runtime is not None and _overlord_stack.runtime.info is not None
    return _overlord_stack.runtime.info


@pytest.fixture
def overlord_db_sync(_overlord_stack: Isolation) -> Iterator[SavepointConnection]:
    """A psycopg2 connection to the migrated database, in a transaction rolled back after the test."""
    isolation = _overlord_stack
    conn = errors.guarded(isolation.begin_sync)
    yield conn
    if not errors.guarded(lambda: isolation.end_sync(conn)):
        errors.fail_test(errors.SYNC_COMMITTED)


@pytest_asyncio.fixture(name="_overlord_db_function_loop", loop_scope="function")  # type: ignore[type-var]  # its stubs allow only async functions
def _overlord_db_function_loop(_overlord_stack: Isolation) -> Iterator[Any]:
    """``overlord_db`` for a test with a loop of its own: a connection through the relay, made in that loop.

    A synchronous pytest-asyncio fixture, which pytest-asyncio (1.4 and later) runs with its loop
    scope's loop set as the current one: the connection is made on that (still idle) loop directly.
    As an async fixture it would cost a wrapped loop run (a task, a context copy, signal handlers
    set and put back) per test, and its teardown needs no await at all: a relayed connection is
    just dropped."""
    yield from _in_loop(_overlord_stack, loops.current_loop(), keep=False)


def _end_async(isolation: Isolation, test: AsyncTest) -> None:
    if not errors.guarded(lambda: isolation.end_async(test)):
        errors.fail_test(errors.ASYNC_COMMITTED)


def _loop_fixture(scope: loops.LoopScope) -> Any:
    """The event loop of one ``scope``'s tests, seen from inside it: when the scope ends, the connection
    made in that loop is closed there, while the loop still runs."""

    @pytest_asyncio.fixture(name=f"_overlord_loop_{scope}", scope=scope, loop_scope=scope)
    async def fixture(_overlord_stack: Isolation) -> AsyncIterator[asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        yield loop
        await _overlord_stack.close_loop(loop)

    return fixture


def _in_loop(isolation: Isolation, loop: asyncio.AbstractEventLoop, keep: bool = True) -> Iterator[Any]:
    """``overlord_db`` in ``loop``: for tests sharing a wider loop (``keep``), one connection per loop
    and a transaction per test; for a test with a loop of its own, a relayed connection.

    A plain fixture that runs its two steps on the (idle) loop itself: as a pytest-asyncio
    fixture it would cost two wrapped loop runs per test, each with its signal handlers, which
    is more than the whole of a hand-written fixture's work."""
    error: OverlordError | None = None
    try:
        test = isolation.begin_kept(loop) if keep else loop.run_until_complete(isolation.begin_async(keep=False))
    except OverlordError as exc:
        error = exc
    if error is not None:
        errors.fail_test(f"overlord-db: {error}")
    yield test.conn
    _end_async(isolation, test)


_overlord_loop_class = _loop_fixture("class")
_overlord_loop_module = _loop_fixture("module")
_overlord_loop_package = _loop_fixture("package")
_overlord_loop_session = _loop_fixture("session")


# One per loop scope, each asking for its scope's loop by name (a fixture's arguments are its names).
@pytest.fixture
def _overlord_db_class_loop(_overlord_stack: Isolation, _overlord_loop_class: asyncio.AbstractEventLoop) -> Iterator[Any]:
    yield from _in_loop(_overlord_stack, _overlord_loop_class)


@pytest.fixture
def _overlord_db_module_loop(_overlord_stack: Isolation, _overlord_loop_module: asyncio.AbstractEventLoop) -> Iterator[Any]:
    yield from _in_loop(_overlord_stack, _overlord_loop_module)


@pytest.fixture
def _overlord_db_package_loop(_overlord_stack: Isolation,
                              _overlord_loop_package: asyncio.AbstractEventLoop) -> Iterator[Any]:
    yield from _in_loop(_overlord_stack, _overlord_loop_package)


@pytest.fixture
def _overlord_db_session_loop(_overlord_stack: Isolation,
                              _overlord_loop_session: asyncio.AbstractEventLoop) -> Iterator[Any]:
    yield from _in_loop(_overlord_stack, _overlord_loop_session)


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

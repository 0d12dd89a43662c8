"""pytest hooks, options and fixtures. Thin: the work is in runtime, template and connections."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import pytest_asyncio

from . import settings as settings_mod
from . import urls
from .connections import RESET_SESSION, AsyncConnections, SavepointConnection, connect_sync
from .errors import ConfigError, MigrationError, OverlordError
from .runtime import Runtime, ServerInfo

_STATE = pytest.StashKey["_State"]()

_OPTIONS = [
    # (flag, ini name, env var, help)
    ("--seed", "overlord_seed", "OVERLORD_SEED", "load seeds/ENV/*.sql into the template after migrating"),
    ("--overlord-backend", "overlord_backend", "OVERLORD_BACKEND", "auto|embedded|docker|url (auto: a URL if given, else Docker if it answers, else embedded)"),
    ("--overlord-db-url", "overlord_db_url", "OVERLORD_DB_URL", "an existing server to create our databases on (needs CREATEDB)"),
    ("--overlord-image", "overlord_image", "OVERLORD_IMAGE", f"Docker image (default {settings_mod.DEFAULT_IMAGE})"),
    ("--overlord-migrations", "overlord_migrations", "OVERLORD_MIGRATIONS", "migrations folder (default: yoyo.ini, else ./migrations)"),
    ("--overlord-datadir", "overlord_datadir", "OVERLORD_DATADIR", "embedded server data directory (default: per project on /dev/shm)"),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlord-db", "migration-verified PostgreSQL test databases")
    for flag, ini, env, help_text in _OPTIONS:
        group.addoption(flag, dest=ini, default=None, metavar="VALUE", help=f"{help_text} [env {env}, ini {ini}]")
        parser.addini(ini, help=help_text, default=None)
    group.addoption(
        "--overlord-roundtrip",
        action="store_true",
        default=False,
        help="add one test per migration proving apply -> rollback -> apply leaves the schema exact",
    )


def _value(config: pytest.Config, ini: str, env: str) -> str | None:
    return config.getoption(ini) or os.environ.get(env) or config.getini(ini) or None


@dataclass
class _State:
    settings: settings_mod.Settings
    backend: str
    reason: str
    runtime: Runtime | None = None
    sync_conn: SavepointConnection | None = None
    async_conns: AsyncConnections | None = None
    _roundtrip: Any = None  # the round-trip report, computed once per process

    def ensure_runtime(self) -> tuple[Runtime, ServerInfo]:
        if self.runtime is None:
            self.runtime = Runtime(self.settings, self.backend, self.reason)
            try:
                self.runtime.start()
            except BaseException:
                self.runtime = None
                raise
        assert self.runtime.info is not None
        return self.runtime, self.runtime.info

    def roundtrip_report(self) -> Any:
        """The round trip of every migration, run once per process on this run's server."""
        if self._roundtrip is None:
            from . import roundtrip

            runtime, _ = self.ensure_runtime()
            assert runtime.templates is not None
            self._roundtrip = roundtrip.run(runtime.templates, runtime.migrator, self.settings.accepted)
        return self._roundtrip

    def drop_connections(self) -> None:
        if self.sync_conn is not None and not self.sync_conn.closed:
            self.sync_conn.close()
        self.sync_conn = None
        if self.async_conns is not None:
            self.async_conns.close_all()

    def reset_work_db(self) -> None:
        self.drop_connections()
        if self.runtime is not None:
            self.runtime.reset_work_db()

    def shutdown(self) -> None:
        try:
            self.drop_connections()
        finally:
            if self.runtime is not None:
                self.runtime.stop()
                self.runtime = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "overlord_roundtrip: a migration round-trip check")
    values = {ini: _value(config, ini, env) for _, ini, env, _ in _OPTIONS}
    try:
        settings = settings_mod.resolve(
            config.rootpath,
            migrations=values["overlord_migrations"],
            seed=values["overlord_seed"],
            backend=values["overlord_backend"],
            db_url=values["overlord_db_url"],
            image=values["overlord_image"],
            datadir=values["overlord_datadir"],
        )
    except ConfigError as exc:
        if not _uses_overlord(config):
            return  # a project that only has the plugin installed must not break
        raise pytest.UsageError(str(exc)) from None
    from .servers import choose_backend

    backend, reason = choose_backend(settings)
    config.stash[_STATE] = _State(settings, backend, reason)


def _uses_overlord(config: pytest.Config) -> bool:
    """Whether the user asked for us explicitly (any option) or has the files we work on."""
    explicit = any(_value(config, ini, env) for _, ini, env, _ in _OPTIONS) or config.getoption("overlord_roundtrip")
    return bool(explicit) or (config.rootpath / "yoyo.ini").is_file() or (config.rootpath / "migrations").is_dir()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.shutdown()


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(_STATE, None)
    if state is None:
        return []
    s = state.settings
    try:
        from .servers import make_server

        where = make_server(s, state.backend).describe()
    except OverlordError as exc:
        where = str(exc)
    return [
        f"overlord-db: backend {state.backend} ({state.reason}); {where}",
        f"overlord-db: migrations {s.migrations_dir}; seed {s.seed or 'none'}",
    ]


def _state(config: pytest.Config) -> _State:
    state = config.stash.get(_STATE, None)
    if state is None:
        raise pytest.UsageError("pytest-overlord-db is not configured: no migrations folder found (see --overlord-migrations).")
    return state


def _fail_setup(config: pytest.Config, exc: OverlordError) -> None:
    # One paragraph and stop: every test would otherwise repeat the same error.
    if hasattr(config, "workerinput"):
        # pytest.exit inside an xdist worker ends in an INTERNALERROR wall; fail the tests instead.
        pytest.fail(f"overlord-db: {exc}", pytrace=False)
    code = pytest.ExitCode.TESTS_FAILED if isinstance(exc, MigrationError) or exc.exit_code == 1 else pytest.ExitCode.USAGE_ERROR
    pytest.exit(f"overlord-db: {exc}", returncode=code)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def overlord_server(request: pytest.FixtureRequest) -> Iterator[ServerInfo]:
    """Session info: backend, server version, the template's name, URL and cache key."""
    state = _state(request.config)
    error: OverlordError | None = None
    try:
        _, info = state.ensure_runtime()
    except OverlordError as exc:
        error = exc
    if error is not None:  # outside the except block, so no chained traceback is shown
        _fail_setup(request.config, error)
    yield info
    state.shutdown()


@pytest.fixture
def overlord_db_sync(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[SavepointConnection]:
    """A psycopg2 connection to the migrated database, in a transaction rolled back after the test."""
    state = _state(request.config)
    if state.sync_conn is None or state.sync_conn.closed:
        runtime, _ = state.ensure_runtime()
        state.sync_conn = connect_sync(runtime.work_db_url())
    conn = state.sync_conn
    conn.begin_test()
    yield conn
    if not conn.end_test():
        state.reset_work_db()
        pytest.fail(
            "overlord_db_sync: the test committed the transaction the fixture rolls back (autocommit, "
            "`with conn:` or a raw COMMIT), so its writes would leak into later tests. The database was "
            "rebuilt from the template. Use overlord_fresh_db for tests that must really commit.",
            pytrace=False,
        )


def _test_loop_scope(item: Any) -> str:
    marker = item.get_closest_marker("asyncio") if hasattr(item, "get_closest_marker") else None
    scope = (marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")) if marker else None
    return scope or item.config.getini("asyncio_default_test_loop_scope") or "function"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    """Run ``overlord_db`` in the test's own event loop, whatever loop scope the test uses.

    pytest-asyncio runs an async fixture in the loop of the fixture's loop
    scope; an asyncpg connection made in another loop than the test's fails.
    So the fixture's loop scope follows the test's.
    """
    if fixturedef.argname != "overlord_db":
        return (yield)
    func = fixturedef.func
    previous = getattr(func, "_loop_scope", None)
    func._loop_scope = _test_loop_scope(request.node)
    try:
        return (yield)
    finally:
        func._loop_scope = previous


_SCOPE_NODES = {"package": pytest.Package, "module": pytest.Module, "class": pytest.Class}


@pytest_asyncio.fixture
async def overlord_db(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Any:
    """An asyncpg connection to the migrated database, in a transaction rolled back after the test.

    Nested ``conn.transaction()`` blocks in the code under test become savepoints.
    """
    state = _state(request.config)
    runtime, _ = state.ensure_runtime()
    if state.async_conns is None:
        state.async_conns = AsyncConnections(runtime.work_db_url)
    pool = state.async_conns
    scope = _test_loop_scope(request.node)
    keep = scope != "function"
    loop = asyncio.get_running_loop()
    conn, new = await pool.get(keep)
    if keep and new:
        # Close it while its loop still exists: when the loop's scope ends.
        node = request.node.session if scope == "session" else request.node.getparent(_SCOPE_NODES[scope]) or request.node.session
        node.addfinalizer(lambda: pool.close_for(loop))
    transaction = conn.transaction()
    await transaction.start()
    # A plain (sync) finalizer, not an async generator: the relayed case needs no
    # await at all, and pytest-asyncio would spend a whole loop run on it.
    request.addfinalizer(lambda: _end_async_test(state, pool, conn, transaction, keep, loop))
    return conn


async def _rollback_and_reset(conn: Any, transaction: Any) -> None:
    if conn.is_in_transaction():
        await transaction.rollback()
    await conn.execute(RESET_SESSION)


def _end_async_test(state: _State, pool: AsyncConnections, conn: Any, transaction: Any, keep: bool, loop: Any) -> None:
    committed = not conn.is_closed() and not conn.is_in_transaction()
    if keep and not conn.is_closed():
        loop.run_until_complete(_rollback_and_reset(conn, transaction))
    elif not conn.is_closed():
        # A relayed connection: just drop it. The relay rolls its backend back
        # (and resets it) in the background; no round trip here.
        conn.terminate()
    if conn.is_closed():
        pool.forget(conn)
    if committed:
        state.reset_work_db()
        pytest.fail(
            "overlord_db: the test ended the fixture's transaction (a raw COMMIT or ROLLBACK), so its writes "
            "would leak into later tests. The database was rebuilt from the template. Use "
            "`async with conn.transaction():` (a savepoint here) or overlord_fresh_db for real commits.",
            pytrace=False,
        )


@dataclass(frozen=True)
class FreshDatabase:
    """A database cloned from the migrated template for one test; dropped afterwards."""

    name: str
    url: str

    @property
    def dsn(self) -> dict[str, object]:
        """host, port, user, password, dbname: keyword arguments for psycopg2/asyncpg connect."""
        return urls.dsn_parts(self.url)

    def __str__(self) -> str:
        return urls.mask(self.url)

    def __repr__(self) -> str:  # shown by pytest --showlocals and in assertion messages: no passwords
        return f"FreshDatabase(name={self.name!r}, url={urls.mask(self.url)!r})"


@pytest.fixture
def overlord_fresh_db(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[FreshDatabase]:
    """A new database cloned from the template: commit, use several connections; dropped after the test."""
    state = _state(request.config)
    runtime, _ = state.ensure_runtime()
    name = runtime.fresh_db()
    try:
        yield FreshDatabase(name=name, url=runtime.templates.url(name))  # type: ignore[union-attr]
    finally:
        runtime.release_fresh_db(name)  # dropped (WITH FORCE) in the background


# -- --overlord-roundtrip: one test item per migration ---------------------------------------


class RoundtripFailure(Exception):
    pass


class RoundtripItem(pytest.Item):
    """Passes when its migration's apply -> rollback -> apply leaves the schema exact."""

    def __init__(self, *, verdict_id: str, path_hint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdict_id = verdict_id
        self.path_hint = path_hint
        self.add_marker("overlord_roundtrip")

    def runtest(self) -> None:
        state = _state(self.config)
        report = state.roundtrip_report()
        if self.verdict_id == "stale":
            if report.stale_exceptions:
                raise RoundtripFailure("\n".join(
                    f"{s['migration']} / {s['object']}: {s['why']}; remove it from [tool.overlord_db] or fix it"
                    for s in report.stale_exceptions))
            return
        verdicts = report.migrations + ([report.full_cycle] if report.full_cycle else [])
        verdict = next(v for v in verdicts if v.id == self.verdict_id)
        for item in verdict.accepted:
            self.user_properties.append(("accepted", f"{item['object']} — {item['reason']}"))
        if not verdict.ok:
            text = [f"{verdict.id}: {verdict.status}"]
            if verdict.error:
                text.append(verdict.error)
            if verdict.diff:
                text.append(verdict.diff)
            raise RoundtripFailure("\n".join(text))

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, RoundtripFailure):
            return str(excinfo.value)
        if isinstance(excinfo.value, OverlordError):
            return f"overlord-db: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path_hint, None, f"roundtrip {self.verdict_id}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("overlord_roundtrip"):
        return
    state = _state(config)
    from .migrators import for_folder
    from .roundtrip import FULL_CYCLE

    try:
        chain = for_folder(state.settings.migrations_dir, state.settings.migrator).chain()
    except OverlordError as exc:
        raise pytest.UsageError(str(exc)) from None
    for migration in chain:
        items.append(RoundtripItem.from_parent(session, name=f"roundtrip[{migration.id}]", verdict_id=migration.id, path_hint=str(migration.path)))
    if chain:
        items.append(RoundtripItem.from_parent(session, name="roundtrip[all-down-and-up]", verdict_id=FULL_CYCLE, path_hint=str(state.settings.migrations_dir)))
    if state.settings.accepted:
        items.append(RoundtripItem.from_parent(session, name="roundtrip[accepted-exceptions]", verdict_id="stale", path_hint=str(state.settings.root / "pyproject.toml")))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Reports (with their user_properties) reach the xdist controller too, so collect here.
    if report.when == "call":
        for key, value in report.user_properties:
            if key == "accepted":
                _accepted_seen.append((report.nodeid, value))


_accepted_seen: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Accepted round-trip exceptions are shown, never silently hidden."""
    if _accepted_seen:
        terminalreporter.section("overlord-db round trip: accepted exceptions")
        for nodeid, text in _accepted_seen:
            terminalreporter.write_line(f"{nodeid.split('[', 1)[-1].rstrip(']')}: {text}")

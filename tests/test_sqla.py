"""SQLAlchemy 2.x engines and sessions joined to the test's transaction, against the real server."""
from __future__ import annotations

import pytest
from sqlalchemy import String, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from pytest_overlord_db.connections import sqla
from pytest_overlord_db.plugin import state


class Base(DeclarativeBase):
    pass


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def names(session) -> list[str]:
    return sorted(session.scalars(select(Tag.name)))


def test_a_session_that_commits_is_rolled_back_after_the_test(pytestconfig, overlord_server):
    isolation = stack = state.get(pytestconfig).stack()  # two "tests" in a row, driven here
    conn = stack.begin_sync()
    engine = sqla.sync_engine(conn)
    session, connection = sqla.sync_session(engine)
    session.add(Tag(name="committed"))
    session.commit()                                     # application code commits: a savepoint here
    session.add(Tag(name="rolled-back"))
    session.rollback()
    assert names(session) == ["committed"]
    session.close()
    connection.close()
    assert isolation.end_sync(conn)                      # no commit behind the fixture's back
    conn = stack.begin_sync()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tags")
        assert cur.fetchone() == (0,)                    # gone for the next test
    assert isolation.end_sync(conn)


def test_session_fixture(overlord_sqla_session, overlord_db_sync):
    overlord_sqla_session.add_all([Tag(name="a"), Tag(name="b")])
    overlord_sqla_session.commit()
    with pytest.raises(IntegrityError):
        overlord_sqla_session.add(Tag(name="a"))
        overlord_sqla_session.commit()
    overlord_sqla_session.rollback()
    assert names(overlord_sqla_session) == ["a", "b"]
    with overlord_db_sync.cursor() as cur:               # the same connection: it sees the session's rows
        cur.execute("SELECT count(*) FROM tags")
        assert cur.fetchone() == (2,)


def test_application_sessions_on_the_engine(overlord_sqla_engine, overlord_db_sync):
    with overlord_db_sync.cursor() as cur:               # written before the application's first connect
        cur.execute("INSERT INTO tags (name) VALUES ('earlier')")
    make_session = sessionmaker(overlord_sqla_engine)    # what the application builds from its engine
    with make_session.begin() as session:
        session.add(Tag(name="from-app"))
    with Session(overlord_sqla_engine) as session:
        assert names(session) == ["earlier", "from-app"]
    with overlord_sqla_engine.begin() as conn:
        conn.execute(text("INSERT INTO tags (name) VALUES ('core')"))
    with overlord_sqla_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM tags")) == 3


@pytest.mark.asyncio
async def test_async_session_fixture(overlord_sqla_async_session, overlord_db):
    session: AsyncSession = overlord_sqla_async_session
    session.add(Tag(name="async"))
    await session.commit()
    session.add(Tag(name="undone"))
    await session.rollback()
    assert sorted(await session.scalars(select(Tag.name))) == ["async"]
    await session.close()
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 1
    assert overlord_db.is_in_transaction()               # the test's own transaction, rolled back afterwards


@pytest.mark.asyncio
async def test_async_engine_with_application_sessions(overlord_sqla_async_engine, overlord_db):
    make_session = async_sessionmaker(overlord_sqla_async_engine, expire_on_commit=False)
    async with make_session() as session, session.begin():
        session.add(Tag(name="app"))
    with pytest.raises(IntegrityError):
        async with make_session() as session, session.begin():
            session.add(Tag(name="app"))
    async with overlord_sqla_async_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM tags")) == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_async_engine_in_a_wider_loop(overlord_sqla_async_session):
    assert await overlord_sqla_async_session.scalar(text("SELECT count(*) FROM tags")) == 0


SESSION_TESTS = '''
import pytest
from sqlalchemy import Column, MetaData, String, Table, event, func, select, text

TAGS = Table("tags", MetaData(), Column("name", String))
SEEN = []


def test_a_listener_and_options_on_the_engine(overlord_sqla_engine):
    event.listen(overlord_sqla_engine, "before_cursor_execute", lambda *a: SEEN.append("sync"))
    overlord_sqla_engine.update_execution_options(schema_translate_map={None: "gone"})


@pytest.mark.asyncio
async def test_a_listener_and_options_on_the_async_engine(overlord_sqla_async_engine):
    event.listen(overlord_sqla_async_engine.sync_engine, "before_cursor_execute", lambda *a: SEEN.append("async"))
    overlord_sqla_async_engine.sync_engine.update_execution_options(schema_translate_map={None: "gone"})


def test_neither_reaches_the_next_test(overlord_sqla_session):
    SEEN.clear()
    assert overlord_sqla_session.scalar(select(func.count()).select_from(TAGS)) == 0  # not gone.tags
    assert SEEN == []


@pytest.mark.asyncio
async def test_neither_reaches_the_next_async_test(overlord_sqla_async_session):
    SEEN.clear()
    assert await overlord_sqla_async_session.scalar(select(func.count()).select_from(TAGS)) == 0
    assert SEEN == []


def test_commits(overlord_sqla_session):
    overlord_sqla_session.execute(text("INSERT INTO tags (name) VALUES ('x')"))
    overlord_sqla_session.commit()


@pytest.mark.asyncio
async def test_commits_async(overlord_sqla_async_session):
    await overlord_sqla_async_session.execute(text("INSERT INTO tags (name) VALUES ('y')"))
    await overlord_sqla_async_session.commit()


def test_nothing_left(overlord_sqla_session):
    assert overlord_sqla_session.scalar(text("SELECT count(*) FROM tags")) == 0


def test_a_raw_commit_is_still_caught(overlord_sqla_session):
    overlord_sqla_session.execute(text("INSERT INTO tags (name) VALUES ('leak')"))
    overlord_sqla_session.connection().exec_driver_sql("COMMIT")


def test_and_nothing_leaked(overlord_sqla_session):
    assert overlord_sqla_session.scalar(text("SELECT count(*) FROM tags")) == 0
'''


@pytest.mark.slow
def test_whole_runs_roll_back_and_report_a_raw_commit_and_keep_engines_apart(project):
    from pytest_overlord_db.plugin.errors import SYNC_COMMITTED

    project.write("tests/test_sqla_app.py", SESSION_TESTS)
    result = project.result("-q", "tests")
    result.assert_outcomes(passed=9, errors=1)
    assert SYNC_COMMITTED in "\n".join(result.outlines)


def _in_a_loop_of_its_own(isolation, engines, body):
    """One "test" under pytest-asyncio's default function-scoped loop: overlord_db's connection, the engine
    the fixture would give, ``body(engine, conn)`` run in that test's loop; its result."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        test = loop.run_until_complete(isolation.begin_async(keep=False))
        try:
            return loop.run_until_complete(body(engines.engine_for(test.conn), test.conn))
        finally:
            assert isolation.end_async(test)
    finally:
        loop.close()


def test_one_async_engine_serves_each_test_with_that_tests_own_connection(pytestconfig, overlord_server):
    """Two "tests", each in an event loop of its own: the dialect read the server's settings once, and each
    test's session runs on that test's connection, whose writes are gone for the next."""
    isolation = state.get(pytestconfig).stack()
    engines = sqla.AsyncEngines()
    initialized, dialects = [], []

    def run(sql: str):
        async def body(engine, conn):
            dialects.append(engine.dialect)
            if not initialized:
                original = engine.dialect.initialize
                engine.dialect.initialize = lambda c: (initialized.append(c), original(c))[1]
            async with sqla.async_session(engine) as session:
                raw = await (await session.connection()).get_raw_connection()
                assert raw.driver_connection is conn
                value = await session.scalar(text(sql))
                await session.commit()  # a savepoint's release: the test still rolls back
            return value

        return _in_a_loop_of_its_own(isolation, engines, body)

    assert (run("INSERT INTO tags (name) VALUES ('first') RETURNING 1"), run("SELECT count(*) FROM tags")) == (1, 0)
    assert dialects[0] is dialects[1] and len(initialized) == 1


def test_what_a_test_does_to_its_async_engine_stays_with_it(pytestconfig, overlord_server):
    """Listeners (the engine's and its pool's) and execution options a test sets are gone for the next test,
    and the server's settings are read from a session no test changed: a first test that moved its
    search_path before its first use of SQLAlchemy does not become every later test's default schema."""
    import asyncpg
    from sqlalchemy import event, inspect

    from pytest_overlord_db import urls

    isolation = state.get(pytestconfig).stack()
    url = urls.normalize(isolation.runtime.work_db_url())
    engines = sqla.AsyncEngines(first=lambda: asyncpg.connect(url))
    seen = []

    async def first_test(engine, conn):
        await conn.execute("CREATE SCHEMA scratch; SET search_path TO scratch, public")
        event.listen(engine.sync_engine, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(stmt))
        event.listen(engine.sync_engine, "checkout", lambda *a: seen.append("checkout"))
        engine.sync_engine.update_execution_options(schema_translate_map={None: "gone"})
        async with engine.connect() as connection:
            assert await connection.run_sync(lambda c: inspect(c).default_schema_name) == "public"
        assert seen  # the listeners heard this test

    async def next_test(engine, conn):
        seen.clear()
        async with sqla.async_session(engine) as session:
            assert (await session.scalars(select(Tag.name))).all() == []  # no schema_translate_map to "gone"
        async with engine.connect() as connection:
            assert await connection.run_sync(lambda c: inspect(c).default_schema_name) == "public"
        assert seen == []

    _in_a_loop_of_its_own(isolation, engines, first_test)
    _in_a_loop_of_its_own(isolation, engines, next_test)

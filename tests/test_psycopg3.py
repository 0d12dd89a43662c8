"""overlord_psycopg and overlord_psycopg_async: psycopg 3 with the psycopg2 fixture's semantics, on the real server."""
from __future__ import annotations

import psycopg
import pytest

from pytest_overlord_db.plugin import state

USER = "INSERT INTO users (email, google_id, username, role) VALUES (%s, %s, %s, 'citizen')"


def stack(config):
    return state.get(config).stack()


def count(conn, table="users"):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_the_fixture_is_a_migrated_psycopg3_connection_in_a_transaction(overlord_psycopg):
    assert isinstance(overlord_psycopg, psycopg.Connection)
    assert overlord_psycopg.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert overlord_psycopg.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'private_message_queue'").fetchone() == (1,)


def test_one_tests_writes_are_gone_for_the_next(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg("sync")
    conn.execute(USER, ("p3@example.com", "g-p3", "p3"))
    assert count(conn) == 1
    assert isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg("sync")
    assert count(conn) == 0
    assert isolation.end_psycopg(conn)


def test_commit_rollback_and_with_blocks_act_on_a_savepoint(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg("sync")
    conn.execute("INSERT INTO tags (name) VALUES ('committed')")
    conn.commit()
    conn.execute("INSERT INTO tags (name) VALUES ('rolled-back')")
    conn.rollback()
    with conn:  # psycopg 3 would commit and close: here it commits the savepoint and stays open
        conn.execute("INSERT INTO tags (name) VALUES ('with-block')")
    assert not conn.closed
    with pytest.raises(psycopg.errors.UniqueViolation):
        with conn.transaction():  # a savepoint inside the test's transaction
            conn.execute("INSERT INTO tags (name) VALUES ('in-transaction')")
            conn.execute("INSERT INTO tags (name) VALUES ('committed')")
    assert sorted(r[0] for r in conn.execute("SELECT name FROM tags")) == ["committed", "with-block"]
    assert isolation.end_psycopg(conn)  # a commit() is not a commit behind the fixture's back
    conn = isolation.begin_psycopg("sync")
    assert count(conn, "tags") == 0
    assert isolation.end_psycopg(conn)


@pytest.mark.parametrize("escape", ["COMMIT", "COMMIT; BEGIN", "ROLLBACK; BEGIN", "END; START TRANSACTION"])
def test_a_raw_commit_is_caught(pytestconfig, overlord_server, escape):
    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg("sync")
    conn.execute(USER, ("escaped@example.com", "g-esc", "esc"))
    conn.execute(escape)
    conn.execute(USER, ("after@example.com", "g-after", "after"))
    assert not isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg("sync")  # the work database was rebuilt: nothing leaked
    assert count(conn) == 0
    assert isolation.end_psycopg(conn)


def test_a_failed_statement_is_cleaned_up(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg("sync")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO users (email, google_id, username, role) VALUES ('x', 'y', 'z', 'emperor')")
    assert isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg("sync")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert isolation.end_psycopg(conn)


def test_session_state_does_not_reach_the_next_test(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg("sync")
    conn.execute("SELECT pg_advisory_lock(4444)")
    conn.execute("SET application_name = 'leaky'")
    assert isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg("sync")
    assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").fetchone() == (0,)
    assert conn.execute("SHOW application_name").fetchone() != ("leaky",)
    assert isolation.end_psycopg(conn)


def test_psycopg2_keeps_working_beside_it(overlord_psycopg, overlord_db_sync):
    overlord_psycopg.execute("INSERT INTO tags (name) VALUES ('psycopg3')")
    with overlord_db_sync.cursor() as cur:  # two connections, two transactions
        cur.execute("SELECT count(*) FROM tags")
        assert cur.fetchone() == (0,)
    assert count(overlord_psycopg, "tags") == 1


@pytest.mark.asyncio
async def test_async_fixture(overlord_psycopg_async):
    conn = overlord_psycopg_async
    assert isinstance(conn, psycopg.AsyncConnection)
    await conn.execute("INSERT INTO tags (name) VALUES ('kept')")
    await conn.commit()
    await conn.execute("INSERT INTO tags (name) VALUES ('undone')")
    await conn.rollback()
    async with conn:
        await conn.execute("INSERT INTO tags (name) VALUES ('with-block')")
    async with conn.transaction():
        await conn.execute("INSERT INTO tags (name) VALUES ('savepoint')")
    cur = await conn.execute("SELECT name FROM tags ORDER BY name")
    assert [r[0] for r in await cur.fetchall()] == ["kept", "savepoint", "with-block"]
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


@pytest.mark.asyncio(loop_scope="session")
async def test_async_fixture_in_a_session_loop(overlord_psycopg_async):
    cur = await overlord_psycopg_async.execute("SELECT count(*) FROM tags")
    assert await cur.fetchone() == (0,)


def test_async_isolation_and_commit_detection(pytestconfig, overlord_server):
    # Each "test" runs in an event loop of its own, as under pytest-asyncio's function-scoped loops.
    import asyncio

    async def run(conn, *statements):
        for statement in statements:
            cur = await conn.execute(statement)
        return await cur.fetchone() if cur.description else None

    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg("async")
    asyncio.run(run(conn, "INSERT INTO tags (name) VALUES ('escaped')", "COMMIT"))
    assert not isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg("async")
    assert asyncio.run(run(conn, "INSERT INTO tags (name) VALUES ('only-here')", "SELECT count(*) FROM tags")) == (1,)
    assert isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg("async")
    assert asyncio.run(run(conn, "SELECT count(*) FROM tags")) == (0,)
    assert isolation.end_psycopg(conn)


COMMITTING = '''
import pytest

def test_commits_for_real(overlord_psycopg):
    overlord_psycopg.execute("INSERT INTO tags (name) VALUES ('leak')")
    overlord_psycopg.execute("COMMIT")

@pytest.mark.asyncio
async def test_commits_async(overlord_psycopg_async):
    await overlord_psycopg_async.execute("COMMIT")

def test_after(overlord_psycopg):
    assert overlord_psycopg.execute("SELECT count(*) FROM tags").fetchone() == (0,)
'''


@pytest.mark.slow
def test_a_raw_commit_is_reported_as_the_psycopg2_fixture_reports_it(project):
    from pytest_overlord_db.plugin.app_fixtures import committed

    project.write("tests/test_commit.py", COMMITTING)
    result = project.result("-q", "tests")
    result.assert_outcomes(passed=3, errors=2)
    out = "\n".join(result.outlines)
    assert committed("overlord_psycopg") in out and committed("overlord_psycopg_async") in out
    assert "Traceback" not in out


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_test_transaction_is_begun_at_the_last_end_only_while_young(pytestconfig, overlord_server, kind):
    """As with psycopg2: the end of one test begins the next one's transaction (one round trip a test), but
    now(), the transaction's start, is never older than FRESH at the next test's setup."""
    import asyncio
    import time

    from pytest_overlord_db.connections.sync import FRESH

    def query(conn, sql):
        if kind == "sync":
            return conn.execute(sql).fetchone()

        async def run():
            return await (await conn.execute(sql)).fetchone()

        return asyncio.run(run())

    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg(kind)
    assert isolation.end_psycopg(conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # the next test's, begun
    ended = time.time()
    conn = isolation.begin_psycopg(kind)  # at once: the transaction begun by that end
    started, clock = query(conn, "SELECT extract(epoch FROM now())::float8, extract(epoch FROM clock_timestamp())::float8")
    assert started <= ended <= clock
    assert isolation.end_psycopg(conn)
    time.sleep(FRESH * 3)
    setup = time.time()
    conn = isolation.begin_psycopg(kind)  # too old by now: begun again
    assert query(conn, "SELECT extract(epoch FROM now())::float8")[0] >= setup - 0.002
    assert isolation.end_psycopg(conn)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_backend_ended_between_tests_is_replaced_at_the_next_begin(pytestconfig, overlord_server, kind,
                                                                      monkeypatch):
    """The next test's transaction, begun by the last end, is taken without a word to the server only
    while nothing arrived on the socket: a backend terminated in between is found and replaced."""
    import asyncio
    import time

    from pytest_overlord_db.connections import psycopg3

    monkeypatch.setattr(psycopg3, "FRESH", 60.0)  # only what arrived on the socket can tell
    isolation = stack(pytestconfig)
    conn = isolation.begin_psycopg(kind)
    pid = conn.info.backend_pid
    with psycopg.connect(isolation.runtime.work_db_url(), autocommit=True) as other:
        assert isolation.end_psycopg(conn)
        other.execute("SELECT pg_terminate_backend(%s, 1000)", (pid,))
        time.sleep(0.003)  # its FATAL message on its way
        conn = isolation.begin_psycopg(kind)
    try:
        if kind == "sync":
            assert conn.execute("SELECT pg_backend_pid()").fetchone() != (pid,)
        else:
            async def query():
                return await (await conn.execute("SELECT pg_backend_pid()")).fetchone()

            assert asyncio.run(query()) != (pid,)
    finally:
        assert isolation.end_psycopg(conn)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_what_a_test_sets_on_the_connection_object_is_put_back(pytestconfig, overlord_server, kind):
    """The connection serves every test: a row factory or prepare threshold one test chose, and (async) the
    lock two of its tasks waited on in its own event loop, do not reach the next test."""
    import asyncio

    from psycopg.rows import dict_row

    isolation = stack(pytestconfig)

    async def two_at_once(conn):  # psycopg's lock, waited on by the second: bound to this loop
        return await asyncio.gather(*(fetch(conn, "SELECT 1 AS x") for _ in range(2)))

    async def fetch(conn, sql):
        return await (await conn.execute(sql)).fetchone()

    conn = isolation.begin_psycopg(kind)
    threshold = conn.prepare_threshold
    assert threshold is not None
    conn.row_factory, conn.prepare_threshold = dict_row, None
    if kind == "async":
        assert asyncio.run(two_at_once(conn)) == [{"x": 1}, {"x": 1}]
    assert isolation.end_psycopg(conn)
    conn = isolation.begin_psycopg(kind)
    try:
        assert conn.prepare_threshold == threshold
        if kind == "sync":
            assert conn.execute("SELECT 1 AS x").fetchone() == (1,)
        else:
            assert asyncio.run(two_at_once(conn)) == [(1,), (1,)]  # another loop, as under function-scoped loops
    finally:
        assert isolation.end_psycopg(conn)

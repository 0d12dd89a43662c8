"""The fixtures against the real embedded server and our own migrations."""
from __future__ import annotations

import asyncpg
import psycopg2
import pytest

USER = "INSERT INTO users (email, google_id, username, role) VALUES ($1, $2, $3, 'citizen') RETURNING id"
USER_SYNC = "INSERT INTO users (email, google_id, username, role) VALUES (%s, %s, %s, 'citizen') RETURNING id"


def stack(config):
    """The process's test-database lifecycle, driven directly: a test can play two tests in a row."""
    from pytest_overlord_db.plugin import state

    return state.get(config).stack()


def test_server_info(overlord_server):
    assert overlord_server.backend == "embedded"
    assert overlord_server.version_num >= 180000
    assert overlord_server.template.endswith(overlord_server.cache_key)
    assert "password" not in str(overlord_server)


@pytest.mark.asyncio
async def test_overlord_db_is_migrated_asyncpg(overlord_db):
    assert isinstance(overlord_db, asyncpg.Connection)
    tables = {r["tablename"] for r in await overlord_db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "topics", "posts", "private_messages", "private_message_queue", "appeals", "roles", "user_permissions"} <= tables
    assert await overlord_db.fetchval("SELECT count(*) FROM pg_matviews WHERE matviewname = 'user_leaderboard'") == 1
    assert await overlord_db.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector") == 1.0
    assert await overlord_db.fetchval("SELECT 'ABC'::citext = 'abc'::citext") is True
    assert overlord_db.is_in_transaction()


# One test's writes are gone for the next: both "tests" run here, one after the other, through the same
# lifecycle the fixtures use (so the check cannot be split across xdist workers and pass vacuously).
@pytest.mark.asyncio
async def test_isolation_async(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    first = await isolation.begin_async(keep=False)
    await first.conn.fetchval(USER, "leak@example.com", "g-leak", "leaky")
    assert await first.conn.fetchval("SELECT count(*) FROM users") == 1
    assert isolation.end_async(first)
    second = await isolation.begin_async(keep=False)
    assert await second.conn.fetchval("SELECT count(*) FROM users WHERE email = 'leak@example.com'") == 0
    assert isolation.end_async(second)


def test_isolation_sync(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute(USER_SYNC, ("sync@example.com", "g-sync", "sync"))
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 1
    assert isolation.end_sync(conn)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE email = 'sync@example.com'")
        assert cur.fetchone()[0] == 0
    assert isolation.end_sync(conn)


@pytest.mark.asyncio
async def test_nested_transactions_are_savepoints(overlord_db):
    await overlord_db.fetchval(USER, "outer@example.com", "g-outer", "outer")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with overlord_db.transaction():  # code under test: a nested transaction
            await overlord_db.fetchval(USER, "inner@example.com", "g-inner", "inner")
            await overlord_db.fetchval(USER, "inner@example.com", "g-inner2", "dupe")
    async with overlord_db.transaction():
        await overlord_db.fetchval(USER, "kept@example.com", "g-kept", "kept")
    emails = {r["email"] for r in await overlord_db.fetch("SELECT email FROM users")}
    assert emails == {"outer@example.com", "kept@example.com"}
    assert overlord_db.is_in_transaction()


def test_sync_commit_and_rollback_act_on_a_savepoint(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute(USER_SYNC, ("c1@example.com", "g-c1", "c1"))
    conn.commit()  # application code commits...
    with conn.cursor() as cur:
        cur.execute(USER_SYNC, ("c2@example.com", "g-c2", "c2"))
    conn.rollback()  # ...and rolls back: only the work since the commit goes
    with conn.cursor() as cur:
        cur.execute("SELECT email FROM users")
        assert [r[0] for r in cur.fetchall()] == ["c1@example.com"]
    assert isolation.end_sync(conn)  # a commit() is not a commit behind the fixture's back
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 0  # the "committed" row is gone for the next test
    assert isolation.end_sync(conn)


@pytest.mark.parametrize("escape", ["COMMIT", "COMMIT; BEGIN", "ROLLBACK; BEGIN", "END; START TRANSACTION"])
def test_sync_transaction_ended_behind_the_fixture_is_caught(pytestconfig, overlord_server, escape):
    """Even when a new transaction was begun afterwards (the connection still says 'in transaction')."""
    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute(USER_SYNC, ("escaped@example.com", "g-esc", "esc"))
        cur.execute(escape)
        cur.execute(USER_SYNC, ("after@example.com", "g-after", "after"))
    assert not isolation.end_sync(conn)
    conn = isolation.begin_sync()  # the work database was rebuilt: nothing leaked
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 0
    assert isolation.end_sync(conn)
    assert not conn.notices  # no "no transaction in progress" warnings left for the next test


def test_sync_failed_statement_is_cleaned_up(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    with pytest.raises(psycopg2.errors.CheckViolation):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO users (email, google_id, username, role) VALUES ('x', 'y', 'z', 'emperor')")
    assert isolation.end_sync(conn)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert isolation.end_sync(conn)


def test_fresh_db_commits_are_visible_to_a_second_connection(overlord_fresh_db):
    assert overlord_fresh_db.name.startswith("ovl_")
    assert overlord_fresh_db.dsn["dbname"] == overlord_fresh_db.name
    writer = psycopg2.connect(overlord_fresh_db.url)
    reader = psycopg2.connect(**{k: v for k, v in overlord_fresh_db.dsn.items() if v is not None})
    try:
        with writer, writer.cursor() as cur:
            cur.execute(USER_SYNC, ("fresh@example.com", "g-fresh", "fresh"))
        with reader.cursor() as cur:
            cur.execute("SELECT username FROM users")
            assert cur.fetchall() == [("fresh",)]
    finally:
        writer.close()
        reader.close()  # left open on purpose would also be fine: teardown forces the drop


def test_fresh_db_starts_clean(overlord_fresh_db):
    # Order-dependent checks (the previous clone is gone) run in test_sessions, where order is fixed.
    conn = psycopg2.connect(overlord_fresh_db.url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_fresh_db_with_asyncpg(overlord_fresh_db):
    conn = await asyncpg.connect(overlord_fresh_db.url)
    try:
        await conn.execute("INSERT INTO tags (name) VALUES ('robots')")
        assert await conn.fetchval("SELECT count(*) FROM tags") == 1
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_both_fixtures_in_one_test(overlord_db, overlord_db_sync):
    # Two connections, two transactions: each sees only its own uncommitted rows.
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('async')")
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT count(*) FROM tags")
        assert cur.fetchone()[0] == 0


# Under the default function-scoped loop, overlord_db goes through the relay, which reuses backends:
# nothing of one test's session may reach the next.
@pytest.mark.asyncio
async def test_relay_session_state_does_not_reach_the_next_test(pytestconfig, overlord_server):
    isolation = stack(pytestconfig)
    first = await isolation.begin_async(keep=False)
    conn = first.conn
    backend = conn.get_server_pid()
    assert await conn.fetchval("SELECT $1::int + 1", 1) == 2  # a prepared statement
    await conn.execute("SELECT pg_advisory_lock(4242)")
    await conn.execute("CREATE TEMP TABLE scratch (id int)")
    await conn.execute("LISTEN overlord_channel")
    assert isolation.end_async(first)
    second = await isolation.begin_async(keep=False)
    conn = second.conn
    assert conn.get_server_pid() == backend  # the relay handed the same backend on
    assert await conn.fetchval("SELECT $1::int + 1", 2) == 3  # same statement name, no clash
    assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()") == 0
    assert await conn.fetchval("SELECT to_regclass('pg_temp.scratch')") is None
    assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    assert isolation.end_async(second)


@pytest.mark.asyncio
async def test_relay_passes_cancel_requests(pytestconfig, overlord_server):
    import asyncio
    import time

    isolation = stack(pytestconfig)
    test = await isolation.begin_async(keep=False)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(test.conn.fetchval("SELECT pg_sleep(30)"), timeout=0.2)
    assert time.monotonic() - started < 5
    assert not test.conn.is_closed()  # the connection is usable after the cancel
    isolation.end_async(test)
    after = await isolation.begin_async(keep=False)
    assert await after.conn.fetchval("SELECT 1") == 1 and after.conn.is_in_transaction()
    assert isolation.end_async(after)


@pytest.mark.asyncio
async def test_relay_hands_out_the_real_backend_key(overlord_db):
    assert overlord_db.get_server_pid() == await overlord_db.fetchval("SELECT pg_backend_pid()")


def test_sync_session_state_does_not_reach_the_next_test(pytestconfig, overlord_server):
    """The end of a test resets only the advisory locks: what else a session keeps goes with the rollback."""
    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(4343); LISTEN sync_channel; SET search_path = pg_catalog; "
                    "SET SESSION statement_timeout = '4s'; DECLARE held CURSOR WITH HOLD FOR SELECT 1; "
                    "CREATE TEMP TABLE scratch (id int); SELECT set_config('app.user', 'x', false)")
    conn.commit()  # the application's commit: a savepoint, so all of it is still the test's to roll back
    assert isolation.end_sync(conn)
    conn = isolation.begin_sync()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM pg_listening_channels()")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT current_setting('search_path'), current_setting('statement_timeout'), "
                    "current_setting('app.user', true), (SELECT count(*) FROM pg_cursors), to_regclass('pg_temp.scratch')")
        assert cur.fetchone() == ('"$user", public', "0", "", 0, None)
    assert isolation.end_sync(conn)


def test_a_backend_ended_between_tests_is_replaced_at_the_next_begin(pytestconfig, overlord_server, monkeypatch):
    """The next test's transaction, begun by the last end, is taken without a word to the server only
    while nothing arrived on the socket: a backend terminated in between is found and replaced."""
    import time

    from pytest_overlord_db.connections import sync

    monkeypatch.setattr(sync, "FRESH", 60.0)  # only what arrived on the socket can tell
    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    pid = conn.info.backend_pid
    other = psycopg2.connect(isolation.runtime.work_db_url())
    other.autocommit = True
    try:
        assert isolation.end_sync(conn)
        with other.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, 1000)", (pid,))
        time.sleep(0.003)  # its FATAL message on its way
        conn = isolation.begin_sync()
    finally:
        other.close()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone() != (pid,)
    assert isolation.end_sync(conn)


def test_a_test_transaction_is_begun_at_the_last_end_only_while_young(pytestconfig, overlord_server):
    """The end of one test begins the next one's transaction (one round trip per test), but now(), the
    transaction's start, is never older than FRESH at the next test's setup."""
    import time

    from pytest_overlord_db.connections.sync import FRESH

    isolation = stack(pytestconfig)
    conn = isolation.begin_sync()
    assert isolation.end_sync(conn)
    ended = time.time()
    conn = isolation.begin_sync()  # at once: the transaction begun by that end
    with conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now())::float8, extract(epoch FROM clock_timestamp())::float8")
        started, clock = cur.fetchone()
    assert started <= ended <= clock
    assert isolation.end_sync(conn)
    time.sleep(FRESH * 3)
    setup = time.time()
    conn = isolation.begin_sync()  # too old by now: begun again
    with conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now())::float8")
        assert cur.fetchone()[0] >= setup - 0.002  # the server's clock and ours are one clock, in 1 µs steps
    assert isolation.end_sync(conn)

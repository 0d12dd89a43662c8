"""The fixtures against the real embedded server and our own migrations."""
from __future__ import annotations

import asyncpg
import psycopg2
import pytest

USER = "INSERT INTO users (email, google_id, username, role) VALUES ($1, $2, $3, 'citizen') RETURNING id"
USER_SYNC = "INSERT INTO users (email, google_id, username, role) VALUES (%s, %s, %s, 'citizen') RETURNING id"


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


# Two tests run in file order: the second sees nothing of the first.
@pytest.mark.asyncio
async def test_isolation_async_writes(overlord_db):
    await overlord_db.fetchval(USER, "leak@example.com", "g-leak", "leaky")
    assert await overlord_db.fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.asyncio
async def test_isolation_async_sees_nothing(overlord_db):
    assert await overlord_db.fetchval("SELECT count(*) FROM users WHERE email = 'leak@example.com'") == 0


def test_isolation_sync_writes(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute(USER_SYNC, ("sync@example.com", "g-sync", "sync"))
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 1


def test_isolation_sync_sees_nothing(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE email = 'sync@example.com'")
        assert cur.fetchone()[0] == 0


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


def test_sync_commit_and_rollback_act_on_a_savepoint(overlord_db_sync):
    conn = overlord_db_sync
    with conn.cursor() as cur:
        cur.execute(USER_SYNC, ("c1@example.com", "g-c1", "c1"))
    conn.commit()  # application code commits...
    with conn.cursor() as cur:
        cur.execute(USER_SYNC, ("c2@example.com", "g-c2", "c2"))
    conn.rollback()  # ...and rolls back: only the work since the commit goes
    with conn.cursor() as cur:
        cur.execute("SELECT email FROM users")
        assert [r[0] for r in cur.fetchall()] == ["c1@example.com"]


def test_sync_commit_does_not_leak(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 0


def test_sync_failed_statement_is_cleaned_up(overlord_db_sync):
    with pytest.raises(psycopg2.errors.CheckViolation):
        with overlord_db_sync.cursor() as cur:
            cur.execute("INSERT INTO users (email, google_id, username, role) VALUES ('x', 'y', 'z', 'emperor')")


def test_sync_after_failed_statement(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


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
async def test_relay_session_state_first(overlord_db):
    assert await overlord_db.fetchval("SELECT $1::int + 1", 1) == 2  # a prepared statement
    await overlord_db.execute("SELECT pg_advisory_lock(4242)")
    await overlord_db.execute("CREATE TEMP TABLE scratch (id int)")
    await overlord_db.execute("LISTEN overlord_channel")


@pytest.mark.asyncio
async def test_relay_session_state_second(overlord_db):
    assert await overlord_db.fetchval("SELECT $1::int + 1", 2) == 3  # same statement name, no clash
    assert await overlord_db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()") == 0
    assert await overlord_db.fetchval("SELECT to_regclass('pg_temp.scratch')") is None
    assert await overlord_db.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0


@pytest.mark.asyncio
async def test_relay_passes_cancel_requests(overlord_db):
    import asyncio
    import time

    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(overlord_db.fetchval("SELECT pg_sleep(30)"), timeout=0.2)
    assert time.monotonic() - started < 5
    # The connection is usable after the cancel (asyncpg rolls back to its savepoint-free state).
    assert not overlord_db.is_closed()


@pytest.mark.asyncio
async def test_relay_backend_is_reused(overlord_db):
    pids = {await overlord_db.fetchval("SELECT pg_backend_pid()")}
    assert overlord_db.get_server_pid() in pids  # the key handed out is the real backend's


@pytest.mark.asyncio
async def test_relay_after_cancel_is_clean(overlord_db):
    assert await overlord_db.fetchval("SELECT 1") == 1
    assert overlord_db.is_in_transaction()


def test_sync_session_state_first(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(4343); LISTEN sync_channel")


def test_sync_session_state_second(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM pg_listening_channels()")
        assert cur.fetchone() == (0,)

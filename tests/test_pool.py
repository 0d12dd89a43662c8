"""overlord_pool: asyncpg.Pool's interface over the test's connection, against the real server."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pytest_overlord_db.connections.pool import OverlordPool

USER = "INSERT INTO users (email, google_id, username, role) VALUES ($1, $2, $3, 'citizen') RETURNING id"


async def names(conn):
    return sorted(r["name"] for r in await conn.fetch("SELECT name FROM tags"))


@pytest.mark.asyncio
async def test_acquire_hands_out_the_tests_connection_in_its_transaction(overlord_pool, overlord_db):
    async with overlord_pool.acquire() as conn:
        assert conn is overlord_db
        await conn.execute("INSERT INTO tags (name) VALUES ('kept')")
    assert await names(overlord_db) == ["kept"]  # released: the work stays for the rest of the test
    assert overlord_db.is_in_transaction()


@pytest.mark.asyncio
async def test_awaited_acquire_and_release(overlord_pool, overlord_db):
    conn = await overlord_pool.acquire()
    try:
        assert overlord_pool.get_idle_size() == 0
        await conn.execute("INSERT INTO tags (name) VALUES ('awaited')")
    finally:
        await overlord_pool.release(conn)
    assert overlord_pool.get_idle_size() == 1
    assert await names(overlord_db) == ["awaited"]
    with pytest.raises(asyncpg.InterfaceError, match="no connection is acquired"):
        await overlord_pool.release(conn)


@pytest.mark.asyncio
async def test_code_failing_inside_an_acquire_leaves_nothing_and_the_rest_stays(overlord_pool, overlord_db):
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('before')")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with overlord_pool.acquire() as conn:
            await conn.execute("INSERT INTO tags (name) VALUES ('half-way')")
            await conn.execute("INSERT INTO tags (name) VALUES ('before')")  # fails: unique
    with pytest.raises(KeyError):  # a Python error, the transaction itself fine
        async with overlord_pool.acquire() as conn:
            await conn.execute("INSERT INTO tags (name) VALUES ('python-error')")
            raise KeyError("no such user")
    assert await names(overlord_db) == ["before"]  # the test's transaction is usable, not aborted


@pytest.mark.asyncio
async def test_release_after_a_failure_the_code_swallowed_undoes_that_acquire(overlord_pool, overlord_db):
    conn = await overlord_pool.acquire()
    await conn.execute("INSERT INTO tags (name) VALUES ('lost')")
    with pytest.raises(asyncpg.UndefinedTableError):
        await conn.execute("SELECT * FROM no_such_table")
    await overlord_pool.release(conn)  # no error: undone as a failed transaction would be
    assert await names(overlord_db) == []
    assert await overlord_pool.fetchval("SELECT 1") == 1


@pytest.mark.asyncio
async def test_concurrent_acquires_take_turns(overlord_pool, overlord_db):
    inside, overlaps = [], []

    async def repository_call(i: int) -> int:
        async with overlord_pool.acquire() as conn:
            if inside:
                overlaps.append(i)
            inside.append(i)
            await conn.execute("INSERT INTO tags (name) VALUES ($1)", f"t{i}")
            await asyncio.sleep(0)  # let the others try
            value = await conn.fetchval("SELECT count(*) FROM tags")
            inside.remove(i)
            return int(value)

    counts = await asyncio.gather(*(repository_call(i) for i in range(6)))
    assert sorted(counts) == [1, 2, 3, 4, 5, 6] and overlaps == []
    assert len(await names(overlord_db)) == 6


@pytest.mark.asyncio
async def test_the_same_gather_on_the_bare_connection_fails(overlord_db):
    # What the lock saves application code from: asyncpg refuses two operations at once on one connection.
    with pytest.raises(asyncpg.InterfaceError, match="another operation is in progress"):
        await asyncio.gather(*(overlord_db.fetchval("SELECT pg_sleep(0.01)") for _ in range(3)))


@pytest.mark.asyncio
async def test_query_methods(overlord_pool, overlord_db):
    assert await overlord_pool.execute("INSERT INTO tags (name) VALUES ($1)", "a") == "INSERT 0 1"
    await overlord_pool.executemany("INSERT INTO tags (name) VALUES ($1)", [("b",), ("c",)])
    assert [r["name"] for r in await overlord_pool.fetch("SELECT name FROM tags ORDER BY name")] == ["a", "b", "c"]
    assert (await overlord_pool.fetchrow("SELECT name FROM tags WHERE name = $1", "b"))["name"] == "b"
    assert await overlord_pool.fetchval("SELECT count(*) FROM tags") == 3
    assert await overlord_pool.fetchval("SELECT 1, 2", column=1) == 2
    rows = await overlord_pool.fetchmany("SELECT $1::text AS v", [("x",), ("y",)])
    assert [r["v"] for r in rows] == ["x", "y"]
    assert await overlord_pool.copy_records_to_table("tags", records=[("d",)], columns=["name"]) == "COPY 1"
    assert await names(overlord_db) == ["a", "b", "c", "d"]


@pytest.mark.asyncio
async def test_a_failing_pool_query_leaves_the_test_transaction_usable(overlord_pool, overlord_db):
    await overlord_pool.execute("INSERT INTO tags (name) VALUES ('first')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await overlord_pool.execute("INSERT INTO tags (name) VALUES ('first')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await overlord_pool.executemany("INSERT INTO tags (name) VALUES ($1)", [("second",), ("first",)])
    assert await names(overlord_db) == ["first"]


@pytest.mark.asyncio
async def test_transaction_is_a_savepoint(overlord_pool, overlord_db):
    async with overlord_pool.transaction() as conn:
        await conn.execute("INSERT INTO tags (name) VALUES ('committed')")
    with pytest.raises(RuntimeError):
        async with overlord_pool.transaction() as conn:
            await conn.execute("INSERT INTO tags (name) VALUES ('rolled-back')")
            raise RuntimeError("business rule")
    assert await names(overlord_db) == ["committed"]


@pytest.mark.asyncio
async def test_code_under_test_may_nest_its_own_transactions(overlord_pool, overlord_db):
    async with overlord_pool.acquire() as conn:
        await conn.execute("INSERT INTO tags (name) VALUES ('outer')")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute("INSERT INTO tags (name) VALUES ('inner')")
                await conn.execute("INSERT INTO tags (name) VALUES ('outer')")
        async with overlord_pool.acquire() as again:  # the same task acquiring again: a nested savepoint
            assert again is conn
            await again.execute("INSERT INTO tags (name) VALUES ('nested')")
    assert await names(overlord_db) == ["nested", "outer"]


@pytest.mark.asyncio
async def test_close_stops_the_pool_not_the_connection(overlord_db):
    async with OverlordPool(overlord_db) as pool:  # `async with pool:` closes it at the end, as asyncpg's does
        assert await pool is pool
        assert (pool.get_size(), pool.get_min_size(), pool.get_max_size()) == (1, 1, 1)
        await pool.execute("INSERT INTO tags (name) VALUES ('x')")
    assert pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError, match="pool is closed"):
        await pool.fetchval("SELECT 1")
    assert not overlord_db.is_closed() and overlord_db.is_in_transaction()
    assert await names(overlord_db) == ["x"]


@pytest.mark.asyncio
async def test_a_wrong_connection_cannot_be_released(overlord_pool, overlord_fresh_db):
    other = await asyncpg.connect(overlord_fresh_db.url)
    try:
        with pytest.raises(asyncpg.InterfaceError, match="not acquired from this pool"):
            await overlord_pool.release(other)
    finally:
        await other.close()


@pytest.mark.asyncio
async def test_waiting_for_a_connection_held_by_the_waiter_says_why(overlord_db):
    pool = OverlordPool(overlord_db, wait=0.2)

    async def child() -> None:
        async with pool.acquire():
            pass

    async with pool.acquire():  # holds the one connection while a task it started asks for another
        with pytest.raises(asyncio.TimeoutError, match="waited 0.2 s for the test's one connection"):
            await asyncio.gather(child())
        with pytest.raises(asyncio.TimeoutError):  # the caller's own timeout: asyncpg's plain error
            await asyncio.gather(asyncio.ensure_future(pool.acquire(timeout=0.05).__aenter__()))
    assert await pool.fetchval("SELECT 1") == 1  # the pool still works afterwards


@pytest.mark.asyncio(loop_scope="module")
async def test_works_in_a_wider_loop_scope(overlord_pool, overlord_db):
    results = await asyncio.gather(*(overlord_pool.fetchval("SELECT $1::int * 2", i) for i in range(3)))
    assert results == [0, 2, 4]

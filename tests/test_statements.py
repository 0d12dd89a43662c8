"""Prepared statements kept with a lent backend from one test to the next, against a real server, and the
client messages renamed for them at the protocol level."""
from __future__ import annotations

import functools
import struct
from typing import Any

import asyncpg
import pytest
from test_handoff import begin, direct, lend_to, one_test, run_alone

from pytest_overlord_db.connections import protocol, quick
from pytest_overlord_db.connections.statements import CAP, NOWHERE, Kept, Lending, close

SQL = "SELECT $1::int + 41"


@pytest.fixture
def lender(empty_db_url):
    handoff, kwargs = lend_to(empty_db_url, "unix")
    yield handoff, kwargs
    handoff.close()


def names_for(sql: str) -> str:
    return f"SELECT coalesce(array_agg(name ORDER BY name), '{{}}') FROM pg_prepared_statements WHERE statement = '{sql}'"


async def runs(conn: asyncpg.Connection) -> tuple[int, list[str]]:
    """``SQL`` run in the test's transaction, and the server's names for it."""
    await begin(conn)
    return await conn.fetchval(SQL, 1), await conn.fetchval(names_for(SQL))


def test_a_statement_is_prepared_once_for_all_the_tests_its_backend_serves(lender):
    (first, names), still_open, pid = one_test(lender, runs)
    (again, kept), still_open_again, same = one_test(lender, runs)
    assert (first, again, still_open, still_open_again, same) == (42, 42, True, True, pid)
    assert len(names) == 1 and kept == names  # not prepared again under the second connection's name


def test_a_test_that_writes_rows_keeps_its_statements(lender, empty_db_url):
    direct(empty_db_url, "CREATE TABLE notes (body text)")

    async def writes(conn):
        await begin(conn)
        await conn.execute("INSERT INTO notes VALUES ($1)", "rolled back")
        return await conn.fetchval(names_for("INSERT INTO notes VALUES ($1)"))

    names = [one_test(lender, writes)[0] for _ in range(3)]
    assert len(names[0]) == 1 and names == [names[0]] * 3


def test_a_test_that_changes_the_schema_keeps_nothing_for_the_next(lender):
    # The same text means another type in each test: a statement kept from the first would say the first
    # test's enum, and the server would refuse it ("cached plan must not change result type").
    async def makes_a_type(conn):
        await begin(conn)
        await conn.execute("CREATE TYPE mood AS ENUM ('calm', 'cross'); CREATE TABLE moods (m mood);"
                           "INSERT INTO moods VALUES ('cross')")
        return await conn.fetchval("SELECT m FROM moods"), await conn.fetchval(SQL, 1)

    first, _, pid = one_test(lender, makes_a_type)
    second, still_open, same = one_test(lender, makes_a_type)
    (value, names), _, _ = one_test(lender, runs)
    assert (first, second, still_open, same) == (("cross", 42), ("cross", 42), True, pid)
    assert (value, len(names)) == (42, 1)  # what the schema change threw away is closed, not left on the server


def test_statements_the_sql_deallocates_are_prepared_again(lender):
    async def deallocates(conn):
        value = (await runs(conn))[0]
        await conn.execute("DEALLOCATE ALL")
        return value

    assert one_test(lender, runs)[0][0] == 42
    assert one_test(lender, deallocates)[0] == 42
    (value, names), still_open, _ = one_test(lender, runs)
    assert (value, len(names), still_open) == (42, 1, True)


def test_a_test_ending_in_a_failed_transaction_keeps_nothing(lender):
    async def fails(conn):
        value, names = await runs(conn)
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.fetchval("SELECT 1 / 0")
        return names

    names = one_test(lender, fails)[0]
    (value, again), _, _ = one_test(lender, runs)
    assert value == 42 and len(again) == 1 and again != names


def test_session_state_a_rollback_leaves_is_reset_where_statements_are_kept(lender, empty_db_url):
    direct(empty_db_url, "CREATE SEQUENCE counter")

    async def leaves_state(conn):
        value, names = await runs(conn)
        # Each of these outlives the test's rollback.
        await conn.execute("SELECT pg_advisory_lock(4242)")
        await conn.execute("PREPARE mine AS SELECT 1")
        await conn.execute("SELECT nextval('counter')")
        return names

    async def looks(conn):
        value, names = await runs(conn)
        locks = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        mine = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine'")
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):  # currval: not yet defined in this session
            async with conn.transaction():
                await conn.fetchval("SELECT currval('counter')")
        return names, locks, mine

    names = one_test(lender, leaves_state)[0]
    assert one_test(lender, looks)[0] == (names, 0, 0)


def test_a_backend_keeps_at_most_cap_statements_and_closes_the_rest(lender):
    async def many(conn):
        await begin(conn)
        for n in range(CAP + 5):
            await conn.fetchval(f"SELECT {n}")

    async def count(conn):
        await begin(conn)
        return await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")

    one_test(lender, many)
    assert CAP <= one_test(lender, count)[0] <= CAP + 1  # the 100 kept, and the count's own


def test_a_connection_preparing_a_kept_text_again_keeps_working(lender):
    # asyncpg closes its statements and prepares them again when its caches are reset (as when a codec is
    # set): the kept statement stays, under every name the connection gives it.
    async def reprepares(conn):
        value, names = await runs(conn)
        await conn.reload_schema_state()
        return value, await conn.fetchval(SQL, 1), await conn.fetchval(SQL, 2), names

    first = one_test(lender, reprepares)[0]
    second = one_test(lender, reprepares)[0]
    assert first[:3] == second[:3] == (42, 42, 43) and second[3] == first[3]


def kept_then(lender: Any, empty_db_url: str, setup: str, query: str, change: str) -> tuple[Any, Any]:
    """``query`` in one test, then ``change`` and ``query`` again in the next: what each said."""
    if setup:
        direct(empty_db_url, setup)

    async def plain(conn):
        await begin(conn)
        return [tuple(row) for row in await conn.fetch(query)]

    async def changes(conn):
        await begin(conn)
        await conn.execute(change)
        return [tuple(row) for row in await conn.fetch(query)]

    return one_test(lender, plain)[0], one_test(lender, changes)[0]


@pytest.mark.parametrize("setup, query, change, first, then", [
    ("CREATE TABLE t (a int); INSERT INTO t VALUES (1)", "SELECT * FROM t", "ALTER TABLE t ADD COLUMN b int DEFAULT 7",
     [(1,)], [(1, 7)]),
    ("CREATE TABLE v (a int); INSERT INTO v VALUES (1); CREATE SCHEMA s2; CREATE TABLE s2.v (a text, b text);"
     "INSERT INTO s2.v VALUES ('x', 'y')", "SELECT * FROM v", "SET LOCAL search_path TO s2", [(1,)], [("x", "y")]),
    ("CREATE TABLE u (a int); INSERT INTO u VALUES (1)", "SELECT a FROM u",
     "CREATE TEMP TABLE u (a int); INSERT INTO u VALUES (2)", [(1,)], [(2,)]),
    ("CREATE FUNCTION f(numeric) RETURNS text LANGUAGE sql AS $$SELECT 'numeric'$$", "SELECT f(1)",
     "CREATE FUNCTION f(int) RETURNS text LANGUAGE sql AS $$SELECT 'int'$$", [("numeric",)], [("int",)]),
    ("", "SELECT extract(epoch FROM '2024-01-01 00:00'::timestamptz)::int", "SET LOCAL TIME ZONE 'Asia/Tokyo'",
     [(1704067200,)], [(1704067200 - 9 * 3600,)]),
    ("", "SELECT 5", "DEALLOCATE ALL", [(5,)], [(5,)]),
], ids=["column added", "search_path", "shadowed by a temporary table", "new overload", "time zone", "deallocated"])
def test_what_a_test_changes_before_running_a_kept_text_is_what_that_text_sees(lender, empty_db_url, setup, query,
                                                                               change, first, then):
    assert kept_then(lender, empty_db_url, setup, query, change) == (first, then)


SCHEMAS = ("CREATE TABLE v (a int); INSERT INTO v VALUES (1); CREATE SCHEMA s2; CREATE TABLE s2.v (a text, b text);"
           "INSERT INTO s2.v VALUES ('x', 'y')")


@pytest.mark.parametrize("change", ["/* s2 */ SET LOCAL search_path TO s2", "-- s2\nSET LOCAL search_path TO s2",
                                    "SELECT 1; -- s2\nSET LOCAL search_path TO s2",
                                    "UPDATE pg_settings SET setting = 's2' WHERE name = 'search_path'"],
                         ids=["block comment", "line comment", "after another statement", "pg_settings"])
def test_a_change_behind_a_comment_or_through_pg_settings_is_seen(lender, empty_db_url, change):
    assert kept_then(lender, empty_db_url, SCHEMAS, "SELECT * FROM v", change) == ([(1,)], [("x", "y")])


@pytest.mark.parametrize("change", ["SET LOCAL search_path TO s2", "SELECT set_config('search_path', 's2', true)"])
def test_what_a_test_prepares_after_a_change_is_not_kept_for_the_next(lender, empty_db_url, change):
    # Such a change writes nothing to the catalogs, so the count at the test's end cannot tell.
    direct(empty_db_url, SCHEMAS)

    async def changes(conn):
        await begin(conn)
        await conn.execute(change)
        return [tuple(row) for row in await conn.fetch("SELECT * FROM v")]

    async def plain(conn):
        await begin(conn)
        return [tuple(row) for row in await conn.fetch("SELECT * FROM v")]

    assert (one_test(lender, changes)[0], one_test(lender, plain)[0]) == ([("x", "y")], [(1,)])


@pytest.mark.parametrize("ending", ["ROLLBACK AND CHAIN", "ROLLBACK; BEGIN"])
def test_a_schema_change_in_a_transaction_ended_and_begun_again_at_once_keeps_nothing(lender, empty_db_url, ending):
    # A function's DDL (which the SQL does not show), then a transaction ended and a new one begun in one
    # message: the server never says it was idle, and the new transaction has written nothing.
    direct(empty_db_url, "CREATE TABLE t (a int); INSERT INTO t VALUES (1); CREATE FUNCTION widen() RETURNS void "
                         "LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALT' || 'ER TABLE t ADD COLUMN b int DEFAULT 7'; END$$")

    async def ddl(conn):
        await begin(conn)
        await conn.execute("SELECT widen()")
        rows = [tuple(row) for row in await conn.fetch("SELECT * FROM t")]
        await conn.execute(ending)
        return rows

    async def plain(conn):
        await begin(conn)
        return [tuple(row) for row in await conn.fetch("SELECT * FROM t")]

    assert (one_test(lender, ddl)[0], one_test(lender, plain)[0]) == ([(1, 7)], [(1,)])


def test_a_kept_function_plan_is_made_again_in_the_next_test(lender, empty_db_url):
    # PL/pgSQL keeps the plans of a function's statements for the session: DISCARD PLANS lets them go.
    direct(empty_db_url, "CREATE FUNCTION f2(numeric) RETURNS text LANGUAGE sql AS $$SELECT 'numeric'$$;"
                         "CREATE FUNCTION h() RETURNS text LANGUAGE plpgsql AS $$BEGIN RETURN f2(1); END$$")
    assert kept_then(lender, empty_db_url, "", "SELECT h()", "CREATE FUNCTION f2(int) RETURNS text LANGUAGE sql "
                     "AS $$SELECT 'int'$$") == ([("numeric",)], [("int",)])


def test_names_the_user_gives_and_statements_functions_prepare_do_not_reach_the_next_test(lender, empty_db_url):
    direct(empty_db_url, "CREATE FUNCTION mk() RETURNS int LANGUAGE plpgsql AS "
                         "$$BEGIN EXECUTE 'PREP' || 'ARE zz AS SELECT 1'; RETURN 1; END$$")

    def named(n: int) -> Any:
        async def body(conn):
            await begin(conn)
            values = [await (await conn.prepare(f"SELECT {n}", name="mine")).fetchval(), await conn.fetchval("SELECT mk()")]
            return values + [await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE name = 'zz'")]
        return body

    first, second = one_test(lender, named(1))[0], one_test(lender, named(2))[0]
    assert (first, second) == ([1, 1, 1], [2, 1, 1])  # the second test's 'mine' and 'zz' are its own


def test_after_a_test_that_changed_the_schema_the_next_but_one_keeps_again(lender):
    async def ddl(conn):
        await begin(conn)
        await conn.execute("CREATE TABLE scratch (a int)")

    one_test(lender, runs)
    one_test(lender, ddl)
    names = [one_test(lender, runs)[0][1] for _ in range(4)]
    # The first after it prepares again; its statistics flushed, the one after keeps (PostgreSQL 15 and later).
    assert names[1] == names[2] == names[3]


def message(kind: bytes, *fields: bytes) -> bytes:
    body = b"".join(fields)
    return kind + struct.pack("!I", len(body) + 4) + body


def test_the_connections_names_for_kept_statements_are_the_servers_in_what_it_sends():
    text = b"SELECT $1::int\x00\x00\x00"
    answer = message(b"1") + message(b"t", b"\x00\x01\x00\x00\x00\x17") + message(b"n")
    kept = Kept(by_text={text: (b"__asyncpg_stmt_1__", answer)})
    lending = Lending(kept)
    prepare = (message(b"P", b"__asyncpg_stmt_9a__\x00", text) + message(b"D", b"S__asyncpg_stmt_9a__\x00")
               + message(b"H"))
    assert lending.outgoing(prepare) == (b"", answer)  # answered here: nothing goes to the server
    args = b"\x00\x00\x00\x01\x00\x00\x00\x01" + b"7" + b"\x00\x00"
    bind = message(b"B", b"portal\x00", b"__asyncpg_stmt_9a__\x00", args) + message(b"E", b"portal\x00\x00\x00\x00\x00")
    sent, _ = lending.outgoing(bind + protocol.SYNC)
    messages, rest = protocol.split(sent)
    assert rest == b"" and [kind for kind, _ in messages] == [b"B", b"E", b"S"]
    assert messages[0][1] == message(b"B", b"portal\x00", b"__asyncpg_stmt_1__\x00", args)  # its length too
    assert lending.outgoing(message(b"D", b"S__asyncpg_stmt_9a__\x00") + protocol.SYNC)[0] == (
        message(b"D", b"S__asyncpg_stmt_1__\x00") + protocol.SYNC)
    # Its Close leaves the kept statement alone: it names no statement at all.
    assert lending.outgoing(close(b"__asyncpg_stmt_9a__") + protocol.SYNC)[0] == close(NOWHERE) + protocol.SYNC
    assert lending.aliases == {} and lending.outgoing(bind)[0] == bind  # that name is its own again
    assert lending.outgoing(bind[:9]) == (bind[:9], b"")  # not whole messages: passed on as they are


def test_a_parse_not_kept_is_read_from_the_servers_answer_and_kept():
    kept = Kept()
    lending = Lending(kept)
    text = b"SELECT 1\x00\x00\x00"
    prepare = message(b"P", b"__asyncpg_stmt_1__\x00", text) + message(b"D", b"S__asyncpg_stmt_1__\x00") + message(b"H")
    assert lending.outgoing(prepare) == (prepare, b"")
    answer = message(b"1") + message(b"t", b"\x00\x00") + message(b"T", b"\x00\x00")
    notice = message(b"N", b"Mhello\x00\x00")
    for piece in (answer[:3], answer[3:12] + notice, answer[12:]):  # across reads, with a notice between
        lending.incoming(piece)
    assert kept.by_text == {text: (b"__asyncpg_stmt_1__", answer)} and lending.made == set()
    failed = Lending(Kept())
    failed.outgoing(prepare)
    failed.incoming(message(b"E", b"Mno\x00\x00") + protocol.READY_IDLE)
    assert failed.kept.by_text == {} and failed.made == {b"__asyncpg_stmt_1__"}  # closed at the reset, should it exist
    named = Lending(kept)  # a name the user gave (conn.prepare(..., name=...)): the server's to make, never kept
    mine = message(b"P", b"mine\x00", text) + message(b"D", b"Smine\x00") + message(b"H")
    assert named.outgoing(mine) == (mine, b"") and named.made == {b"mine"} and named.reading is None


def test_asyncpg_arguments_are_worked_out_once_for_lent_connections(empty_db_url, monkeypatch):
    from asyncpg import connect_utils

    from pytest_overlord_db.connections import AsyncConnections

    parsed = []
    parse = connect_utils._parse_connect_arguments

    @functools.wraps(parse)
    def counted(**kwargs: Any) -> Any:
        parsed.append(1)
        return parse(**kwargs)

    monkeypatch.setattr(connect_utils, "_parse_connect_arguments", counted)
    conns = AsyncConnections(lambda: empty_db_url)
    try:
        results = [run_alone(conns, lambda conn: conn.fetchval("SELECT 1")) for _ in range(4)]
    finally:
        conns.close_all()
    assert results == [(1, True)] * 4 and len(parsed) == 2  # the first (new) backend's connect, and once for the rest


def test_no_quick_way_with_an_asyncpg_it_does_not_know_or_more_than_one_address(monkeypatch):
    from asyncpg import connect_utils

    kwargs = {"host": "/tmp", "port": 5432, "user": "u", "password": "p", "database": "d", "ssl": False}
    assert quick.connector(kwargs) is not None
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "read-write")
    assert quick.connector(kwargs) is None
    monkeypatch.delenv("PGTARGETSESSIONATTRS")
    assert quick.connector({**kwargs, "host": ["/tmp", "/run"], "port": [5432, 5433]}) is None

    async def other(*, addr: Any, loop: Any, params: Any, config: Any, connection_class: Any) -> None:
        raise AssertionError("not called")

    monkeypatch.setattr(connect_utils, "_connect_addr", other)
    assert quick.connector(kwargs) is None

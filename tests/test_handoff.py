"""Backends kept between tests and lent to each new event loop's asyncpg connection, against a real server.

Each "test" here is what a function-scoped-loop test is: a new event loop, a lent connection used in
it, and the release outside it (with the loop idle, not yet closed), as the fixture's teardown does.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Awaitable, Callable

import asyncpg
import psycopg2
import pytest

from pytest_overlord_db import urls
from pytest_overlord_db.connections.handoff import Handoff
from pytest_overlord_db.connections.sync import FRESH


@pytest.fixture(params=["unix", "tcp"])
def lender(empty_db_url, request):
    """A handoff to the server's unix socket, or over TCP (as to a container's server) on 127.0.0.1."""
    parts = urls.dsn_parts(empty_db_url)
    path = f"{parts['host']}/.s.PGSQL.{parts['port']}"
    target: object = path if request.param == "unix" else request.getfixturevalue("tcp_to")(path)
    host, port = (parts["host"], parts["port"]) if request.param == "unix" else target  # type: ignore[misc]
    handoff = Handoff(target, begin_ahead=FRESH)
    kwargs = {"host": host, "port": port, "user": parts["user"], "password": parts["password"],
              "database": parts["dbname"], "ssl": False}
    yield handoff, kwargs
    handoff.close()


@pytest.fixture
def tcp_to():
    """A TCP port on 127.0.0.1 whose connections are passed on, byte for byte, to a unix socket."""
    listeners: list[socket.socket] = []

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass

    def serve(listener: socket.socket, path: str) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(path)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def forward(path: str) -> tuple[str, int]:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        threading.Thread(target=serve, args=(listener, path), daemon=True).start()
        return "127.0.0.1", listener.getsockname()[1]

    yield forward
    for listener in listeners:
        listener.close()


def one_test(lender: tuple[Handoff, dict[str, Any]], body: Callable[[asyncpg.Connection], Awaitable[Any]],
             key: str = "work") -> tuple[Any, bool | None, int]:
    """``body``'s result, what the release said (the test's transaction still open) and the backend's pid."""
    handoff, kwargs = lender
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(handoff.connect(key, lambda: asyncpg.connect(**kwargs)))
        assert "create_unix_connection" not in vars(loop)  # the hook is gone once asyncpg has connected
        pid = conn.get_server_pid()
        result = loop.run_until_complete(body(conn))
        still_open = handoff.release(conn)
        assert conn.is_closed()
        loop.run_until_complete(asyncio.sleep(0))
        return result, still_open, pid
    finally:
        loop.close()


def direct(url: str, sql: str) -> Any:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


async def begin(conn: asyncpg.Connection) -> None:
    await conn.transaction().start()


def test_a_backend_is_lent_again_and_nothing_of_its_session_stays(lender):
    async def first(conn):
        # Session state a rollback does not undo, made outside any transaction.
        await conn.execute("SET application_name = 'leaked'")
        await conn.execute("CREATE TEMP TABLE scratch (id int)")
        await conn.execute("SELECT pg_advisory_lock(4242)")
        await conn.execute("LISTEN handoff_channel")
        await conn.execute("PREPARE mine AS SELECT 1")
        return await conn.fetchval("SELECT $1::int + 1", 1)  # asyncpg's own named statement

    async def second(conn):
        await begin(conn)
        return [await conn.fetchval("SELECT $1::int + 1", 2),  # the same statement name again: no clash
                await conn.fetchval("SELECT current_setting('application_name')"),
                await conn.fetchval("SELECT to_regclass('pg_temp.scratch')"),
                await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                    "AND pid = pg_backend_pid()"),
                await conn.fetchval("SELECT count(*) FROM pg_listening_channels()"),
                await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE name = 'mine'"),
                await conn.fetchval("SELECT pg_backend_pid()")]

    result, still_open, pid = one_test(lender, first)
    assert result == 2 and still_open is False  # no transaction was open: what it did was committed
    values, still_open, again = one_test(lender, second)
    assert again == pid and values[-1] == pid  # the same backend, and asyncpg knows its real process id
    assert values[:-1] == [3, "", None, 0, 0, 0]
    assert still_open is True


def test_the_greeting_is_the_servers_own(lender, empty_db_url):
    async def settings(conn):
        return (conn.get_server_version(), conn.get_settings().server_encoding, conn.get_settings().TimeZone,
                conn.is_in_transaction())

    new, _, pid = one_test(lender, settings)
    kept, _, again = one_test(lender, settings)
    assert again == pid and kept == new
    server_version = direct(empty_db_url, "SHOW server_version_num")
    assert new[0].major == int(server_version) // 10000 and new[3] is False


def test_the_tests_begin_is_answered_ahead_and_its_time_is_its_own(lender):
    async def lag(conn):
        await begin(conn)
        return (await conn.fetchval("SELECT extract(epoch FROM clock_timestamp() - now())"),
                conn.is_in_transaction())

    one_test(lender, lag)
    (fresh, in_tx), still_open, _ = one_test(lender, lag)
    assert in_tx and still_open is True and fresh < FRESH + 0.05
    time.sleep(FRESH * 10)  # the reset's BEGIN is too old now: it is rolled back, unseen, before the test's own
    (late, in_tx), still_open, _ = one_test(lender, lag)
    assert in_tx and still_open is True and late < FRESH * 5


def test_a_first_query_outside_a_transaction_runs_outside_the_begun_one(lender, empty_db_url):
    async def autocommit(conn):
        await conn.execute("CREATE TABLE made_outside (id int)")
        return conn.is_in_transaction()

    one_test(lender, lambda conn: conn.fetchval("SELECT 1"))
    in_tx, still_open, _ = one_test(lender, autocommit)
    assert in_tx is False and still_open is False
    assert direct(empty_db_url, "SELECT to_regclass('made_outside') IS NOT NULL") is True


def test_the_release_says_whether_the_tests_transaction_was_still_open(lender):
    async def committed(conn):
        tr = conn.transaction()
        await tr.start()
        await conn.execute("SELECT 1")
        await tr.commit()

    async def failed(conn):
        await begin(conn)
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.execute("SELECT 1 / 0")

    assert one_test(lender, begin)[1] is True
    assert one_test(lender, committed)[1] is False
    assert one_test(lender, failed)[1] is True  # aborted, but still the test's own


def test_a_backend_left_in_a_query_is_not_lent_again_and_its_query_is_cancelled(lender, empty_db_url):
    running: list[asyncio.Task[Any]] = []

    async def leave_running(conn):
        running.append(asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)")))
        await asyncio.sleep(0.2)

    _, _, pid = one_test(lender, leave_running)
    assert running[0].done()  # ended by the release (the connection is gone), not left to the next test
    assert isinstance(running[0].exception(), asyncpg.ConnectionDoesNotExistError)
    _, _, other = one_test(lender, begin)
    assert other != pid
    deadline = time.monotonic() + 10
    while direct(empty_db_url, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert direct(empty_db_url, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == 0


def test_a_backend_the_server_ended_is_not_lent(lender, empty_db_url):
    _, _, pid = one_test(lender, begin)
    assert direct(empty_db_url, f"SELECT pg_terminate_backend({pid})") is True
    deadline = time.monotonic() + 10
    while direct(empty_db_url, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    value, _, other = one_test(lender, lambda conn: conn.fetchval("SELECT 41 + 1"))
    assert value == 42 and other != pid


def test_an_answer_read_in_many_pieces_leaves_the_backend_lendable(lender):
    async def big(conn):
        await begin(conn)
        rows = await conn.fetch("SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g")
        return len(rows)

    rows, _, pid = one_test(lender, big)
    assert rows == 50000
    assert one_test(lender, begin)[2] == pid


def test_a_connection_the_test_closes_closes_at_once_and_its_backend_is_kept(lender):
    async def close(conn):
        await begin(conn)
        started = time.monotonic()
        await asyncio.wait_for(conn.close(), 5)
        return time.monotonic() - started

    took, still_open, pid = one_test(lender, close)
    assert took < 1 and still_open is True
    assert one_test(lender, begin)[2] == pid


def test_cancel_requests_reach_the_lent_backend(lender):
    async def cancelled(conn):
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(30)"), timeout=0.2)
        return time.monotonic() - started, await conn.fetchval("SELECT 1")

    (took, after), _, pid = one_test(lender, cancelled)
    assert took < 5 and after == 1
    assert one_test(lender, begin)[2] == pid


def test_backends_are_kept_per_key(lender):
    _, _, first = one_test(lender, begin, key="a")
    _, _, other = one_test(lender, begin, key="b")
    _, _, again = one_test(lender, begin, key="a")
    assert other != first and again == first


def test_the_hook_is_put_back_when_the_connection_fails(lender):
    handoff, kwargs = lender

    async def fail() -> None:
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await handoff.connect("nowhere", lambda: asyncpg.connect(**{**kwargs, "database": "no_such_db"}))
        loop = asyncio.get_running_loop()
        assert "create_unix_connection" not in vars(loop) and "create_connection" not in vars(loop)
        assert not handoff.lent

    asyncio.run(fail())


def test_only_loops_whose_methods_can_be_replaced_are_lendable():
    class Slotted:
        __slots__ = ()

    loop = asyncio.new_event_loop()
    try:
        assert Handoff.lendable(loop)
        assert not Handoff.lendable(Slotted())  # type: ignore[arg-type]  # as uvloop's Loop, a C type
    finally:
        loop.close()


def test_a_ready_for_query_split_between_two_reads_is_seen():
    """Whether the server is waiting is read from its last six bytes, wherever the reads split them."""
    from pytest_overlord_db.connections.handoff import _Lend

    class Inner:
        got = b""

        def data_received(self, data: bytes) -> None:
            self.got += data

    lend = _Lend(None, None)
    lend.inner, lend.greeted, lend.quiet = Inner(), True, False
    lend.data_received(b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00")
    assert not lend.quiet
    lend.data_received(b"\x00\x05T")
    assert lend.quiet and lend.in_transaction()
    assert lend.inner.got == b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05T"

"""The session-pooling relay on its own, against a real server."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import psycopg2
import pytest

from pytest_overlord_db import urls
from pytest_overlord_db.connections import protocol
from pytest_overlord_db.connections.leftovers import sweep_stale
from pytest_overlord_db.connections.relay import Relay
from pytest_overlord_db.connections.sync import FRESH


# Every test of the relay's guarantees runs against both kinds: a plain relay, and one that begins each
# next client's transaction ahead, as the fixtures' relay does (with the fixtures' freshness limit).
@pytest.fixture(params=[None, FRESH], ids=["plain", "begins-ahead"])
def relay(empty_db_url, request):
    relay = _relay(empty_db_url, request.param)
    yield relay
    relay.close()


def _relay(url: str, begin_ahead: float | None) -> Relay:
    parts = urls.dsn_parts(url)
    relay = Relay(f"{parts['host']}/.s.PGSQL.{parts['port']}", begin_ahead=begin_ahead)
    relay.start()
    return relay


def _through(relay: Relay, url: str) -> str:
    """``url`` rewritten to go through ``relay``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["host"] = os.path.dirname(relay.path)
    query.pop("port", None)
    netloc = parts.netloc.split("@")[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/"), ""))


@pytest.fixture
def ahead_url(empty_db_url):
    """Through a relay whose begun transactions stay fresh for a minute: its own answer to BEGIN always applies."""
    relay = _relay(empty_db_url, 60.0)
    yield _through(relay, empty_db_url)
    relay.close()


@pytest.fixture
def relay_url(relay, empty_db_url):
    return _through(relay, empty_db_url)


def _raw_client(url: str) -> tuple[socket.socket, bytes]:
    """A hand-driven client through the relay at ``url``, past its handshake: the socket and its cancel key."""
    parts = urls.dsn_parts(url)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(f"{parts['host']}/.s.PGSQL.5432")
    sock.sendall(_startup(str(parts["user"]), str(parts["dbname"])))
    key = b""
    for kind, message in _messages(sock, until=b"Z"):
        if kind == b"K":
            key = message
    return sock, key


def _startup(user: str, database: str) -> bytes:
    body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!I", len(body) + 4) + body


def _messages(sock: socket.socket, until: bytes, count: int = 1) -> list[tuple[bytes, bytes]]:
    """Messages read from ``sock`` up to and including the ``count``-th of type ``until``."""
    buffer, seen = b"", []
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the relay closed the connection"
        messages, buffer = protocol.split(buffer + chunk)
        for kind, message in messages:
            seen.append((kind, message))
            if kind == until:
                count -= 1
                if not count:
                    return seen


async def _session(url: str, *queries: str) -> list:
    conn = await asyncpg.connect(url)
    try:
        values = [await conn.fetchval(q) for q in queries]
        return values + [conn.is_in_transaction(), await conn.fetchval("SELECT pg_backend_pid()")]
    finally:
        await conn.close()


def test_backends_are_reused_and_reset(relay_url):
    async def main():
        first = await _session(relay_url, "SELECT 1")
        second = await _session(relay_url, "SELECT 2")
        return first, second

    first, second = asyncio.run(main())
    assert first[0] == 1 and second[0] == 2
    assert first[-1] == second[-1]  # the same backend served both
    assert first[1] is False and second[1] is False


def test_a_reused_backend_starts_outside_a_transaction(relay_url, empty_db_url):
    async def main():
        await _session(relay_url, "SELECT 1")
        conn = await asyncpg.connect(relay_url)
        await conn.execute("CREATE TABLE committed_here (id int)")  # autocommit: must persist
        in_tx = conn.is_in_transaction()
        await conn.close()
        return in_tx

    assert asyncio.run(main()) is False
    direct = psycopg2.connect(empty_db_url)
    with direct.cursor() as cur:
        cur.execute("SELECT to_regclass('committed_here') IS NOT NULL")
        assert cur.fetchone() == (True,)
    direct.close()


def test_transaction_time_is_the_clients_own(relay_url):
    """now() in a relayed client's transaction is when that client began it, not when the backend was reset."""
    async def main():
        await _session(relay_url, "SELECT 1")
        await asyncio.sleep(0.5)  # the backend idles in the pool
        conn = await asyncpg.connect(relay_url)
        async with conn.transaction():
            lag = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp() - now())")
        await conn.close()
        return lag

    assert asyncio.run(main()) < 0.25


def test_concurrent_clients_get_their_own_backends(relay_url):
    async def main():
        conns = await asyncio.gather(*[asyncpg.connect(relay_url) for _ in range(5)])
        pids = set(await asyncio.gather(*[c.fetchval("SELECT pg_backend_pid()") for c in conns]))
        values = await asyncio.gather(*[c.fetchval("SELECT $1::int * 2", i) for i, c in enumerate(conns)])
        await asyncio.gather(*[c.close() for c in conns])
        return pids, values

    pids, values = asyncio.run(main())
    assert len(pids) == 5 and values == [0, 2, 4, 6, 8]


def test_client_that_vanishes_mid_query_does_not_block_the_next(relay_url):
    async def vanish():
        conn = await asyncpg.connect(relay_url)
        task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(0.3)"))
        await asyncio.sleep(0.05)
        conn.terminate()
        task.cancel()

    asyncio.run(vanish())
    started = time.monotonic()
    assert asyncio.run(_session(relay_url, "SELECT 42"))[0] == 42
    assert time.monotonic() - started < 2


@pytest.fixture
def scram_relay(tmp_path):
    """A relay in front of a server of its own where role ``robot`` (password ``s3cret``) must use SCRAM."""
    import uuid

    from pytest_overlord_db.servers.embedded import EmbeddedServer

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path)
    server = EmbeddedServer(os.path.join(base, f"ovl-test-scram-{uuid.uuid4().hex[:8]}"))
    admin = server.start()
    try:
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE ROLE robot LOGIN PASSWORD 's3cret'")
            cur.execute("CREATE DATABASE robotdb OWNER robot")
            cur.execute("SHOW hba_file")
            hba = cur.fetchone()[0]
        with open(hba) as fh:
            rules = fh.read()
        with open(hba, "w") as fh:
            fh.write("local all robot scram-sha-256\n" + rules)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_reload_conf()")
        conn.close()
        relay = Relay(f"{server.socket_dir()}/.s.PGSQL.5432")
        relay.start()
        try:
            yield os.path.dirname(relay.path)
        finally:
            relay.close()
    finally:
        server.stop()
        shutil.rmtree(server.datadir, ignore_errors=True)


async def _robot(host: str, password: str) -> str:
    c = await asyncpg.connect(host=host, user="robot", password=password, database="robotdb")
    try:
        return str(await c.fetchval("SELECT current_user"))
    finally:
        await c.close()


def test_password_authentication_passes_through(scram_relay):
    """The first backend's authentication (SCRAM here) is the server's own, passed through unchanged."""
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_robot(scram_relay, "wrong"))
    assert asyncio.run(_robot(scram_relay, "s3cret")) == "robot"
    assert asyncio.run(_robot(scram_relay, "s3cret")) == "robot"  # the second joins the kept backend


def test_a_client_stalled_in_authentication_stalls_only_itself(scram_relay):
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.settimeout(5)
    stalled.connect(os.path.join(scram_relay, ".s.PGSQL.5432"))
    stalled.sendall(_startup("robot", "robotdb"))
    request = _messages(stalled, until=b"R")[-1][1]
    assert struct.unpack("!I", request[5:9])[0] == 10  # SASL: the server waits for the client's answer
    try:
        started = time.monotonic()
        assert asyncio.run(_robot(scram_relay, "s3cret")) == "robot"  # its own handshake, meanwhile
        assert asyncio.run(_robot(scram_relay, "s3cret")) == "robot"
        assert time.monotonic() - started < 2
    finally:
        stalled.close()


def test_the_reset_is_well_framed():
    messages, rest = protocol.split(protocol.RESET)
    assert [kind for kind, _ in messages] == [b"f", b"S", b"Q", b"Q"] and rest == b""
    assert sum(kind in (b"S", b"Q") for kind, _ in messages) == protocol.RESET_ANSWERS


def test_the_relays_answer_to_begin_is_well_framed():
    messages, rest = protocol.split(protocol.BEGUN)
    assert [kind for kind, _ in messages] == [b"C", b"Z"] and rest == b""
    assert messages[0][1][5:] == b"BEGIN\x00" and messages[1][1][5:] == b"T"  # in a transaction


def test_what_the_relay_does_with_a_first_message_on_a_begun_backend():
    begin, select, leave = (b"Q", protocol.BEGIN), (b"Q", protocol.query(b"SELECT 1")), (b"X", b"X\x00\x00\x00\x04")
    assert protocol.first_on_begun([begin, select], fresh=True) == (protocol.BEGUN, [select], b"")
    assert protocol.first_on_begun([begin], fresh=False) == (b"", [begin], protocol.ROLLBACK)
    assert protocol.first_on_begun([select], fresh=True) == (b"", [select], protocol.ROLLBACK)
    assert protocol.first_on_begun([leave], fresh=True) == (b"", [leave], b"")
    assert protocol.reset(begin=True) == (protocol.RESET + protocol.BEGIN, protocol.RESET_ANSWERS + 1)


def _lag_in_transaction(url: str, pause: float, **transaction: str) -> tuple[float, str, bool]:
    """now()'s lag behind the clock in a second client's transaction, ``pause`` after the first left;
    with its isolation level and whether both clients had the same backend."""
    async def main():
        first = await _session(url, "SELECT 1")
        await asyncio.sleep(pause)
        conn = await asyncpg.connect(url)
        notices: list = []
        conn.add_log_listener(lambda _conn, message: notices.append(message))
        async with conn.transaction(**transaction):
            lag = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp() - now())")
            level = await conn.fetchval("SHOW transaction_isolation")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert not conn.is_in_transaction()
        await conn.close()
        assert notices == []  # not even "there is already a transaction in progress"
        return float(lag), str(level), pid == first[-1]

    return asyncio.run(main())


def test_a_relay_that_begins_ahead_answers_begin_itself(ahead_url):
    """The reset began the transaction: the client's BEGIN is answered without reaching the server, so
    the transaction is as old as the pause (which the fixtures' relay keeps under 10 ms)."""
    lag, level, same_backend = _lag_in_transaction(ahead_url, 0.4)
    assert same_backend and level == "read committed"
    assert lag >= 0.35


def test_only_a_plain_begin_is_answered_by_the_relay(ahead_url):
    """Any other first message (here a BEGIN with an isolation level) goes to the server after a ROLLBACK
    of the relay's, and gets the server's own answer, in a transaction of its own."""
    lag, level, same_backend = _lag_in_transaction(ahead_url, 0.4, isolation="serializable")
    assert same_backend and level == "serializable"
    assert lag < 0.3


def test_a_relay_that_begins_ahead_keeps_the_rollback_it_sends_to_itself(ahead_url):
    first, first_key = _raw_client(ahead_url)
    first.sendall(protocol.BEGIN + protocol.query(b"CREATE TABLE rolled_back (id int)"))
    answers = _messages(first, until=b"Z", count=2)  # the relay's answer to BEGIN, then the server's to CREATE
    assert [kind for kind, _ in answers] == [b"C", b"Z", b"C", b"Z"]
    assert answers[0][1][5:] == b"BEGIN\x00" and answers[2][1][5:] == b"CREATE TABLE\x00"
    assert answers[1][1][5:] == answers[3][1][5:] == b"T"
    first.sendall(b"X\x00\x00\x00\x04")  # leaves in its transaction: the reset rolls it back
    first.close()
    time.sleep(0.2)
    second, second_key = _raw_client(ahead_url)
    second.sendall(protocol.query(b"SELECT to_regclass('rolled_back') IS NULL"))
    answers = _messages(second, until=b"Z")
    assert _pid(second_key) == _pid(first_key)
    # Only the answer to its own query: the ROLLBACK the relay put before it is not passed on.
    assert [kind for kind, _ in answers] == [b"T", b"D", b"C", b"Z"] and answers[-1][1][5:] == b"I"
    assert answers[1][1].endswith(b"t")
    second.close()


def test_answers_to_the_relays_own_rollbacks_are_never_passed_on_but_errors_are():
    z, c, e = (b"Z", b"Z-I"), (b"C", b"C-ROLLBACK"), (b"E", b"E-FATAL")
    select = [(b"T", b"T"), (b"D", b"D"), (b"C", b"C-SELECT"), z]
    assert protocol.unhide([c, z] + select, hidden=1) == (select, 0)
    assert protocol.unhide([c], hidden=1) == ([], 1)  # its ReadyForQuery is still to come
    assert protocol.unhide([c, z, c, z], hidden=2) == ([], 0)
    assert protocol.unhide([e, z], hidden=1) == ([e], 0)
    assert protocol.unhide(select, hidden=0) == (select, 0)


def test_a_client_leaving_before_the_answer_to_the_hidden_rollback(ahead_url):
    """Its first query went after a ROLLBACK of the relay's, and it left before either was answered: the
    next client on that backend still gets only the answer to its own query."""
    first, first_key = _raw_client(ahead_url)
    first.sendall(protocol.query(b"SELECT pg_sleep(0.2)") + b"X\x00\x00\x00\x04")
    first.close()
    time.sleep(0.4)
    second, second_key = _raw_client(ahead_url)
    second.sendall(protocol.query(b"SELECT 1"))
    answers = _messages(second, until=b"Z")
    assert _pid(second_key) == _pid(first_key)
    assert [kind for kind, _ in answers] == [b"T", b"D", b"C", b"Z"] and answers[-1][1][5:] == b"I"
    second.close()


def _state_of(url: str, pid: int) -> str:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        return str(cur.fetchone()[0])


def test_a_pooled_backend_leaves_its_begun_transaction_when_it_is_no_longer_fresh(empty_db_url, ahead_url):
    """The fixtures' relay keeps a begun transaction only for FRESH: a backend pooled longer is not left
    idle in a transaction (which the server's timeouts would end, and which holds back vacuum)."""
    fresh = _relay(empty_db_url, FRESH)
    try:
        for url, state in ((ahead_url, "idle in transaction"), (_through(fresh, empty_db_url), "idle")):
            pid = asyncio.run(_session(url, "SELECT 1"))[-1]
            time.sleep(0.3)
            assert _state_of(empty_db_url, pid) == state
    finally:
        fresh.close()


@pytest.mark.parametrize("timeout", ["idle_in_transaction_session_timeout", "transaction_timeout"])
def test_a_pooled_backend_outlives_the_servers_transaction_timeouts(relay, relay_url, timeout):
    """A client asking for a 50 ms timeout in its startup packet gets backends that are pooled for longer."""
    async def pid() -> int:
        conn = await asyncpg.connect(relay_url, server_settings={timeout: "50"})
        try:
            async with conn.transaction():
                return int(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await conn.close()

    first = asyncio.run(pid())
    time.sleep(0.3)
    assert asyncio.run(pid()) == first


def test_a_client_that_stops_reading_stalls_only_itself(relay, relay_url):
    sock, _ = _raw_client(relay_url)
    sock.sendall(protocol.query(b"SELECT repeat('x', 50000000)"))  # 50 MB it never reads
    time.sleep(0.5)
    started = time.monotonic()
    assert asyncio.run(_session(relay_url, "SELECT 42"))[0] == 42
    assert time.monotonic() - started < 2
    # Back-pressure: the relay stopped reading the big answer rather than holding it all.
    held = sum(len(key.data.out) for key in list(relay.selector.get_map().values()) if isinstance(key.data, protocol.Peer))
    assert held < 8 * 2**20
    sock.close()


def test_a_server_gone_before_the_relay_writes_to_it_ends_only_its_client(tmp_path):
    """The relay writes to a backend whose other end closed a moment before, between two of its selects: the
    client holding it gets an error, and the relay serves the next one (once, that write ended its thread and
    every later client of the run waited forever). A stand-in server makes the moment exact."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "server"))
    listener.listen(8)
    listener.settimeout(5)
    relay = Relay(str(tmp_path / "server"))
    relay.start()
    hold, held, go = threading.Event(), threading.Event(), threading.Event()
    select = relay.selector.select

    def held_select(timeout=None):
        if hold.is_set():
            held.set()
            go.wait(5)
        return select(timeout)

    relay.selector.select = held_select  # type: ignore[method-assign]
    address = os.path.join(os.path.dirname(relay.path), ".s.PGSQL.5432")

    def client_and_backend() -> tuple[socket.socket, socket.socket]:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(5)
        client.connect(address)
        client.sendall(_startup("u", "d"))
        backend, _ = listener.accept()
        backend.settimeout(5)
        backend.recv(65536)  # the startup packet, passed on
        backend.sendall(protocol.AUTH_OK + b"K" + struct.pack("!III", 12, 7, 9) + protocol.READY_IDLE)
        assert _messages(client, until=b"Z")[-1][0] == b"Z"
        return client, backend

    try:
        client, backend = client_and_backend()
        hold.set()
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(address)  # wakes the relay, which stops at `held`
        assert held.wait(5)
        client.sendall(protocol.query(b"SELECT 1"))  # read first by the relay, and passed on to ...
        backend.close()  # ... a backend already gone
        hold.clear()
        go.set()
        left = client.recv(65536)
        assert left == b"" or left[:1] == b"E", left
        assert relay.thread.is_alive()
        client2, _ = client_and_backend()  # the next client is served
        client2.close()
    finally:
        go.set()
        relay.close()
        listener.close()


def _cancel(url: str, key: bytes) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(urls.dsn_parts(url)["host"] + "/.s.PGSQL.5432")
    sock.sendall(protocol.cancel_request(key))
    sock.close()


def _pid(key: bytes) -> int:
    return int(struct.unpack("!I", key[5:9])[0])


def test_each_client_cancels_only_its_own_query(relay_url):
    first, first_key = _raw_client(relay_url)
    first.sendall(b"X\x00\x00\x00\x04")
    first.close()
    time.sleep(0.1)
    second, second_key = _raw_client(relay_url)
    assert _pid(second_key) == _pid(first_key)  # the same backend, and so the same process id
    assert second_key != first_key  # but a secret of its own

    second.sendall(protocol.query(b"SELECT pg_sleep(0.6)"))
    time.sleep(0.2)
    _cancel(relay_url, first_key)  # stale: its client has gone
    answers = [kind for kind, _ in _messages(second, until=b"Z")]
    assert b"E" not in answers and b"D" in answers

    started = time.monotonic()
    second.sendall(protocol.query(b"SELECT pg_sleep(30)"))
    time.sleep(0.2)
    _cancel(relay_url, second_key)
    errors = [message for kind, message in _messages(second, until=b"Z") if kind == b"E"]
    assert errors and b"C57014" in errors[0]  # query_canceled
    assert time.monotonic() - started < 5
    second.close()


def test_a_query_left_running_by_a_client_is_cancelled(relay_url, empty_db_url):
    async def vanish():
        conn = await asyncpg.connect(relay_url)
        task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(600)"))
        await asyncio.sleep(0.2)
        conn.terminate()
        task.cancel()

    asyncio.run(vanish())
    direct = psycopg2.connect(empty_db_url)
    direct.autocommit = True
    try:
        deadline = time.monotonic() + 3
        while True:
            with direct.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)' AND state = 'active'")
                running = cur.fetchone()[0]
            if not running or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        direct.close()
    assert running == 0
    assert asyncio.run(_session(relay_url, "SELECT 7"))[0] == 7


def test_a_client_that_leaves_in_the_middle_of_copy(relay_url, empty_db_url):
    direct = psycopg2.connect(empty_db_url)
    direct.autocommit = True
    with direct.cursor() as cur:
        cur.execute("CREATE TABLE copied (id int)")
    sock, key = _raw_client(relay_url)
    sock.sendall(protocol.query(b"COPY copied FROM STDIN"))
    _messages(sock, until=b"G")  # CopyInResponse: the server waits for rows
    sock.sendall(b"d" + struct.pack("!I", 6) + b"1\n")
    sock.close()
    started = time.monotonic()
    nxt, next_key = _raw_client(relay_url)
    nxt.sendall(protocol.query(b"SELECT 3"))
    answers = _messages(nxt, until=b"Z")
    nxt.close()
    assert time.monotonic() - started < 1
    assert [kind for kind, _ in answers] == [b"T", b"D", b"C", b"Z"] and answers[-1][1][5:] == b"I"  # idle, no transaction
    assert _pid(next_key) == _pid(key)  # the same backend, reset and kept
    with direct.cursor() as cur:
        cur.execute("SELECT count(*) FROM copied")
        assert cur.fetchone() == (0,)
    direct.close()


def test_folders_of_dead_relays_are_swept():
    folder = tempfile.mkdtemp(prefix="ovl-t-", dir="/tmp")  # short: unix socket paths are limited
    old = time.time() - 3600

    def relay_folder(name: str, listening: bool | None) -> tuple[str, socket.socket | None]:
        path = os.path.join(folder, name)
        os.mkdir(path, 0o700)
        sock = None
        if listening is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(os.path.join(path, ".s.PGSQL.5432"))
            if listening:
                sock.listen(1)
            else:
                sock.close()
                sock = None
        os.utime(path, (old, old))
        return path, sock

    try:
        dead, _ = relay_folder("ovl-relay-dead", listening=False)
        empty, _ = relay_folder("ovl-relay-empty", listening=None)
        live, listener = relay_folder("ovl-relay-live", listening=True)
        young = os.path.join(folder, "ovl-relay-young")
        os.mkdir(young, 0o700)
        target = os.path.join(folder, "elsewhere")
        os.mkdir(target)
        os.symlink(target, os.path.join(folder, "ovl-relay-link"))
        others = None
        if os.getuid() == 0:
            others, _ = relay_folder("ovl-relay-others", listening=None)
            os.chown(others, 65534, 65534)
        removed = sweep_stale(folder)
        assert sorted(removed) == sorted([dead, empty])
        assert not os.path.exists(dead) and not os.path.exists(empty)
        assert os.path.isdir(live) and os.path.isdir(young) and os.path.isdir(target)
        assert others is None or os.path.isdir(others)
        if listener is not None:
            listener.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_relay_sweeps_before_it_starts(empty_db_url, monkeypatch):
    folder = tempfile.mkdtemp(prefix="ovl-t-", dir="/tmp")
    monkeypatch.setattr(tempfile, "tempdir", folder)
    dead = os.path.join(folder, "ovl-relay-dead")
    os.mkdir(dead, 0o700)
    os.utime(dead, (time.time() - 3600,) * 2)
    parts = urls.dsn_parts(empty_db_url)
    relay = Relay(f"{parts['host']}/.s.PGSQL.{parts['port']}")
    try:
        relay.start()
        assert not os.path.exists(dead)
        assert os.path.dirname(relay.path).startswith(folder)
    finally:
        relay.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_relay_whose_thread_died_is_replaced_for_the_next_connection(empty_db_url, monkeypatch):
    """A defect that ends the relay's thread must not leave every later function-loop test waiting on it
    (the relay serves loops whose methods the handoff cannot hook, as uvloop's)."""
    from pytest_overlord_db.connections import AsyncConnections
    from pytest_overlord_db.connections.handoff import Handoff

    monkeypatch.setattr(Handoff, "lendable", staticmethod(lambda loop: False))
    conns = AsyncConnections(lambda: empty_db_url)

    async def one() -> int:
        conn = await conns.get(keep=False)
        try:
            return await conn.fetchval("SELECT 41 + 1")
        finally:
            await conn.close()

    assert asyncio.run(one()) == 42
    dead = conns.relay
    assert dead is not None
    dead._stop = True
    dead._wake_w.send(b"x")  # as an exception would, the loop returns and the thread ends
    dead.thread.join(5)
    assert not dead.thread.is_alive()
    assert asyncio.run(asyncio.wait_for(one(), 10)) == 42
    assert conns.relay is not dead and conns.relay is not None and conns.relay.thread.is_alive()
    conns.relay.close()

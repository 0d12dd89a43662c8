"""The session-pooling relay on its own, against a real server."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import psycopg2
import pytest

from pytest_overlord_db import urls
from pytest_overlord_db.connections.relay import Relay


@pytest.fixture
def relay_url(empty_db_url):
    parts = urls.dsn_parts(empty_db_url)
    relay = Relay(f"{parts['host']}/.s.PGSQL.{parts['port']}")
    relay.start()
    yield relay.url_for(empty_db_url)
    relay.close()


async def _session(url: str, *queries: str) -> list:
    conn = await asyncpg.connect(url)
    try:
        return [await conn.fetchval(q) for q in queries] + [conn.is_in_transaction(), conn.get_server_pid()]
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
    assert first[1] is False and second[1] is False  # not left in the relay's speculative BEGIN


def test_first_message_other_than_begin_runs_outside_a_transaction(relay_url, empty_db_url):
    async def main():
        await _session(relay_url, "SELECT 1")  # leaves a reset backend with a transaction begun
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


def test_concurrent_clients_get_their_own_backends(relay_url):
    async def main():
        conns = await asyncio.gather(*[asyncpg.connect(relay_url) for _ in range(5)])
        pids = {c.get_server_pid() for c in conns}
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


def test_begin_answered_by_the_relay_is_a_real_transaction(relay_url, empty_db_url):
    async def main():
        await _session(relay_url, "SELECT 1")
        conn = await asyncpg.connect(relay_url)
        tr = conn.transaction()
        await tr.start()  # answered locally from the pre-begun transaction
        await conn.execute("CREATE TABLE rolled_back (id int)")
        xact = await conn.fetchval("SELECT txid_current_if_assigned() IS NOT NULL")
        await tr.rollback()
        await conn.close()
        return xact

    assert asyncio.run(main()) is True
    direct = psycopg2.connect(empty_db_url)
    with direct.cursor() as cur:
        cur.execute("SELECT to_regclass('rolled_back')")
        assert cur.fetchone() == (None,)
    direct.close()


def test_password_authentication_passes_through(tmp_path):
    """The first backend's authentication (SCRAM here) is the server's own, passed through unchanged."""
    import os
    import shutil
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
        host = os.path.dirname(relay.path)
        try:
            async def attempt(password: str):
                c = await asyncpg.connect(host=host, user="robot", password=password, database="robotdb")
                try:
                    return await c.fetchval("SELECT current_user")
                finally:
                    await c.close()

            with pytest.raises(asyncpg.InvalidPasswordError):
                asyncio.run(attempt("wrong"))
            assert asyncio.run(attempt("s3cret")) == "robot"
            assert asyncio.run(attempt("s3cret")) == "robot"  # the second joins the kept backend
        finally:
            relay.close()
    finally:
        server.stop()
        shutil.rmtree(server.datadir, ignore_errors=True)
        for suffix in (".lock", ".clients.json"):
            try:
                os.unlink(str(server.datadir) + suffix)
            except OSError:
                pass

"""A server that dies mid-run, or backends terminated under the fixtures: one paragraph, or a reconnect."""
from __future__ import annotations

import re

KILL_SERVER = '''
import os

import psutil
import pytest


def test_kill(overlord_db_sync):
    # The whole server at once, as a crash takes it: a backend notices its postmaster's death only a moment
    # later, and the next test could still pass on its connection.
    pid = int(open(os.path.join(os.environ["OVERLORD_DATADIR"], "pgdata", "postmaster.pid")).readline())
    postmaster = psutil.Process(pid)
    backends = postmaster.children(recursive=True)
    postmaster.kill()
    for backend in backends:
        backend.kill()
    psutil.wait_procs([postmaster, *backends], timeout=5)


def test_sync_after(overlord_db_sync):
    pass


@pytest.mark.asyncio
async def test_async_after(overlord_db):
    pass


def test_fresh_after(overlord_fresh_db):
    pass


def test_plain():
    pass
'''

TERMINATE_BACKENDS = '''
import psycopg2
import pytest


def _work(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 1")


def test_warm_sync(overlord_db_sync):
    _work(overlord_db_sync)


@pytest.mark.asyncio
async def test_warm_function_loop(overlord_db):
    assert await overlord_db.fetchval("SELECT 1") == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_warm_session_loop(overlord_db):
    assert await overlord_db.fetchval("SELECT 1") == 1


def test_warm_fresh(overlord_fresh_db):
    pass


def test_terminate_everything(overlord_server):
    conn = psycopg2.connect(overlord_server.admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        assert cur.fetchone()[0] >= 4  # the sync, session-loop, relayed and admin connections at least
    conn.close()


def test_sync_again(overlord_db_sync):
    _work(overlord_db_sync)


@pytest.mark.asyncio
async def test_function_loop_again(overlord_db):
    assert await overlord_db.fetchval("SELECT 2") == 2


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop_again(overlord_db):
    assert await overlord_db.fetchval("SELECT 3") == 3


def test_fresh_again(overlord_fresh_db):
    conn = psycopg2.connect(overlord_fresh_db.url)
    conn.close()
'''


def test_a_server_dying_mid_run_is_one_paragraph_and_the_rest_fail_fast(project):
    project.write("test_it.py", KILL_SERVER)
    try:
        result = project.result("-W", "ignore::DeprecationWarning", "test_it.py", timeout=60)
    finally:
        # A server killed like this leaves its shared memory (a System V segment, its /dev/shm segments) to
        # the next server of its folder, which cleans them up when it starts: one start and stop, or every
        # run of this suite left 1.1 MB behind.
        from pytest_overlord_db.servers.embedded import EmbeddedServer

        cleaner = EmbeddedServer(project.datadir)
        cleaner.start()
        cleaner.stop()
    text = "\n".join(result.outlines + result.errlines)
    outcomes = result.parseoutcomes()
    # test_kill and test_plain pass; test_kill's teardown (its backend is gone) and the 3 setups after fail.
    assert outcomes.get("passed") == 2 and outcomes.get("errors") == 4, text
    assert "Traceback" not in text and "INTERNALERROR" not in text, text
    assert text.count("stopped during the run") >= 3, text
    errors_section = text.split("short test summary info")[0]  # the summary may repeat it
    assert errors_section.count("The last lines of its log:") == 1, text  # said once, in full
    assert re.search(r"\d{4}-\d\d-\d\d [\d:.]+ UTC \[\d+\] (LOG|ERROR|FATAL): ", text), text  # lines of its log
    assert "cleaning up after the run failed" not in text, text
    assert result.duration < 30


def test_terminated_backends_are_replaced_by_the_next_test(project):
    project.write("pytest.ini", "[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    project.write("test_it.py", TERMINATE_BACKENDS)
    result = project.result("test_it.py", timeout=60)
    text = "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=9)
    assert "Traceback" not in text and "cleaning up after the run failed" not in text, text

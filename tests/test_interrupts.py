"""A hanging migration or query is visible and interruptible, and an interrupted run leaves nothing behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg2
import pytest
from conftest import default_sigint

pytestmark = pytest.mark.slow

SLOW = 'from yoyo import step\nstep("SELECT pg_sleep(60); CREATE TABLE slow_one (id int)", "DROP TABLE slow_one")\n'


def wait_for_query(url: str, needle: str, timeout: float = 60) -> bool:
    """Until a backend runs a statement containing ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = psycopg2.connect(url, connect_timeout=1)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                                (f"%{needle}%",))
                    if cur.fetchone()[0]:
                        return True
            finally:
                conn.close()
        except psycopg2.OperationalError:
            pass
        time.sleep(0.05)
    return False


def stop_and_time(proc: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    sent = time.monotonic()
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    return time.monotonic() - sent, out


def leftovers(project) -> list[str]:  # type: ignore[no-untyped-def]
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(project.datadir)
    conn = psycopg2.connect(server.start())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ovl\\_%%' AND datname NOT LIKE 'ovl\\_t\\_%%'")  # templates: ovl_t_<key>
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
        server.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_hanging_migration_is_shown_and_stops_on_a_signal(project, signum):
    project.write("migrations/0006.slow.py", SLOW)
    project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
    proc = project.popen("-q", "test_it.py")
    assert wait_for_query(f"postgresql://postgres@/postgres?host={project.datadir}", "pg_sleep(60)"), "the build never started"
    if signum == signal.SIGINT:
        time.sleep(2.6)  # long enough for the "still running" line (once is enough: the signal does not change it)
    took, out = stop_and_time(proc, signum)
    assert took < 5, f"took {took:.1f} s to stop:\n{out}"
    assert signum != signal.SIGINT or "building the template: applying 0006.slow, running for" in out, out
    assert not project.server_processes(), "the server was left running"
    assert leftovers(project) == []  # no half-built template, no clone


def test_a_migration_timeout_cancels_it_with_one_paragraph(project):
    project.write("migrations/0006.slow.py", SLOW)
    project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
    started = time.monotonic()
    result = project.run("-q", "--overlord-migration-timeout=1", "test_it.py")
    assert time.monotonic() - started < 30
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Migration 0006.slow ran longer than the migration timeout of 1 s" in out, out
    assert "Traceback" not in out
    assert leftovers(project) == []


def test_a_long_query_in_a_sync_test_stops_on_ctrl_c(project):
    project.write("test_it.py", "def test_it(overlord_db_sync):\n    overlord_db_sync.cursor().execute('SELECT pg_sleep(60)')\n")
    proc = project.popen("-q", "test_it.py")
    assert wait_for_query(f"postgresql://postgres@/postgres?host={project.datadir}", "pg_sleep(60)"), "the test never ran"
    took, out = stop_and_time(proc, signal.SIGINT)
    assert took < 5, f"took {took:.1f} s to stop:\n{out}"
    assert "KeyboardInterrupt" in out
    assert not project.server_processes()


def test_the_cli_stops_a_hanging_migration_on_ctrl_c_and_leaves_no_lock(app_project, empty_db_url):
    (app_project / "migrations" / "0006.slow.py").write_text(SLOW)
    proc = subprocess.Popen(default_sigint([sys.executable, "-m", "pytest_overlord_db.cli", "migrate", "--database-url", empty_db_url]),
                            cwd=app_project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("OVERLORD_")})
    assert wait_for_query(empty_db_url, "pg_sleep(60)"), "the migration never started"
    took, out = stop_and_time(proc, signal.SIGINT)
    assert took < 5, f"took {took:.1f} s to stop:\n{out}"
    conn = psycopg2.connect(empty_db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM yoyo_lock")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT migration_id FROM _yoyo_migration ORDER BY 1")
            assert [r[0] for r in cur.fetchall()][-1] == "0005.add-rbac-system"  # 0006 was not applied
            cur.execute("SELECT to_regclass('slow_one')")
            assert cur.fetchone() == (None,)
    finally:
        conn.close()

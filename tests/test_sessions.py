"""Whole pytest runs of a separate user project: caching, seeds, xdist, crashes, cleanup.

Each project here has only migrations/, seeds/, yoyo.ini and test files — no
conftest — and finds the plugin through its pytest11 entry point.
"""
from __future__ import annotations

import os
import re
import signal
import time

import psycopg2
import pytest

pytestmark = pytest.mark.slow

REPORT_TEST = '''
import pytest

def test_report(overlord_server):
    print("TEMPLATE", overlord_server.template, "REUSED", overlord_server.template_reused)
'''

USER_TESTS = '''
import pytest

@pytest.mark.asyncio
async def test_async_write(overlord_db):
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('t1')")
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 1

@pytest.mark.asyncio
async def test_async_clean(overlord_db):
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0

def test_sync(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT count(*) FROM users")
    assert cur.fetchone()[0] == 0
'''


def templates_in(out: str) -> list[tuple[str, str]]:
    return re.findall(r"TEMPLATE (\S+) REUSED (\w+)", out)


def test_user_project_runs_with_plain_pytest(project):
    project.write("tests/test_user.py", USER_TESTS)
    project.result("-q", "tests").assert_outcomes(passed=3)
    assert not (project.root / "conftest.py").exists() and not (project.root / "tests" / "conftest.py").exists()


def test_header_names_the_backend(project, tmp_path):
    project.write("test_report.py", REPORT_TEST)
    project.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # auto, and no Docker
    result = project.run("test_report.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "overlord-db: backend embedded (auto: Docker does not answer" in result.stdout
    assert "overlord-db:   " not in result.stdout  # the settings table is for -v
    verbose = project.run("-v", "--overlord-backend=embedded", "test_report.py")
    assert "overlord-db:   backend = embedded  [command line]" in verbose.stdout, verbose.stdout
    assert f"overlord-db:   datadir = {project.datadir}  [env OVERLORD_DATADIR]" in verbose.stdout
    assert "overlord-db:   seed = (unset)  [default]" in verbose.stdout


def test_second_run_reuses_template_and_changed_migration_builds_a_new_one(project):
    project.write("test_report.py", REPORT_TEST)
    first = project.run("-s", "-q", "test_report.py")
    second = project.run("-s", "-q", "test_report.py")
    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    [(name1, reused1)] = templates_in(first.stdout)
    [(name2, reused2)] = templates_in(second.stdout)
    assert (reused1, reused2) == ("False", "True") and name1 == name2
    # Once the server is up, a line says which template and whether it was built (and in how long) or reused.
    assert re.search(rf"overlord-db: embedded PostgreSQL 18\.\d+, template {name1} \(built in \d+\.\d\ds\)", first.stdout), first.stdout
    assert f"template {name2} (reused)" in second.stdout, second.stdout
    assert "building the template:" not in first.stdout  # the migrations are listed with -v only

    migration = project.root / "migrations" / "0005.add-rbac-system.py"
    migration.write_text(migration.read_text().replace("description TEXT,\n", "description TEXT NOT NULL,\n", 1))
    # Unused templates are kept (3 by default) for other branches; keeping none, the old one goes.
    third = project.run("-s", "-v", "--overlord-keep-templates=0", "test_report.py")
    [(name3, reused3)] = templates_in(third.stdout)
    assert reused3 == "False" and name3 != name1
    applied = re.findall(r"overlord-db: building the template: apply (\S+)", third.stdout)
    assert applied == [p.stem for p in sorted((project.root / "migrations").glob("0*.py"))], third.stdout
    assert not project.server_processes()
    # The old template of this project was dropped; the new one is there.
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(project.datadir)
    conn = psycopg2.connect(server.start())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ovl\\_t\\_%%' ORDER BY 1")
            assert [r[0] for r in cur.fetchall()] == [name3]
    finally:
        conn.close()
        server.stop()


def test_seed_development_is_loaded_into_the_template(project):
    project.write(
        "test_seeded.py",
        '''
def test_seeded(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT count(*) FROM users"); users = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM topics"); topics = cur.fetchone()[0]
    assert (users, topics) == (5, 3)
''',
    )
    result = project.run("-q", "--seed=development", "test_seeded.py")
    assert result.returncode == 0, result.stdout + result.stderr
    unseeded = project.run("-q", "test_seeded.py")
    assert unseeded.returncode == 1 and "assert (0, 0) == (5, 3)" in unseeded.stdout


def test_xdist_two_workers_are_isolated(project):
    body = "\n".join(
        f'''
@pytest.mark.asyncio
async def test_{i}(overlord_db):
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('same-name')")
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 1
    await asyncio.sleep(0.01)
'''
        for i in range(20)
    )
    project.write("test_many.py", "import asyncio\nimport pytest\n" + body)
    project.result("-q", "-n", "2", "-p", "xdist", "test_many.py").assert_outcomes(passed=20)
    assert not project.server_processes()


def test_no_server_is_left_after_a_normal_run(project):
    project.write("tests/test_user.py", USER_TESTS)
    assert project.run("-q", "tests").returncode == 0
    assert project.server_processes() == []


def test_sigkill_while_building_the_template_then_rerun_succeeds(project):
    # A slow migration keeps the build going long enough to kill pytest in the middle of it.
    project.write(
        "migrations/0006.slow.py",
        'from yoyo import step\nstep("SELECT pg_sleep(1.5); CREATE TABLE slow_one (id int)", "DROP TABLE slow_one")\n',
    )
    project.write("test_slow.py", "def test_it(overlord_db_sync):\n    overlord_db_sync.cursor().execute('SELECT * FROM slow_one')\n")
    victim = project.popen("-q", "test_slow.py")
    url = f"postgresql://postgres@/postgres?host={project.datadir}"
    deadline = time.monotonic() + 60
    building = False
    while time.monotonic() < deadline and not building:
        try:
            conn = psycopg2.connect(url, connect_timeout=1)
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'ovl\\_%%\\_b\\_%%'")
                building = cur.fetchone()[0] == 1
            conn.close()
        except psycopg2.OperationalError:
            pass
        time.sleep(0.02)
    assert building, "the template build never started"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    rerun = project.run("-q", "-s", "test_slow.py")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert project.server_processes() == []  # the killed run's server was stopped by the rerun


def test_auto_mode_and_commit_detection(project):
    project.write(
        "test_auto.py",
        '''
async def test_unmarked_async_test_in_auto_mode(overlord_db):
    assert await overlord_db.fetchval("SELECT 1") == 1

async def test_raw_commit_is_caught(overlord_db):
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('committed')")
    await overlord_db.execute("COMMIT")

async def test_after_raw_commit_database_is_clean(overlord_db):
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0

def test_with_block_commit_is_a_savepoint(overlord_db_sync):
    with overlord_db_sync:
        overlord_db_sync.cursor().execute("INSERT INTO tags (name) VALUES ('with-block')")

def test_raw_sync_commit_is_caught(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("INSERT INTO tags (name) VALUES ('raw-commit')")
    cur.execute("COMMIT")
    cur.execute("SELECT 1")

def test_after_sync_commits_database_is_clean(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT count(*) FROM tags")
    assert cur.fetchone()[0] == 0
''',
    )
    result = project.result("-q", "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function", "test_auto.py")
    result.assert_outcomes(passed=6, errors=2)
    out = "\n".join(result.outlines)
    assert "ERROR test_auto.py::test_raw_commit_is_caught" in out
    assert "ERROR test_auto.py::test_raw_sync_commit_is_caught" in out
    assert "the test ended the fixture's transaction" in out
    assert "the test ended the transaction the fixture rolls back" in out


def test_url_backend_creates_and_drops_only_its_own_databases(project, tmp_path):
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(project.datadir.with_name(project.datadir.name + "-theirs"))
    url = server.start()
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE precious")
            cur.execute("CREATE DATABASE ovl_lookalike")  # our prefix, but not ours: no mark
        project.write("tests/test_user.py", USER_TESTS + REPORT_TEST.replace("import pytest", ""))
        # The seed can also come from the ini file.
        project.write("pytest.ini", "[pytest]\noverlord_seed = production\n")
        project.write("tests/test_badges.py", "def test_badges(overlord_db_sync):\n    cur = overlord_db_sync.cursor()\n"
                      "    cur.execute('SELECT count(*) FROM badges')\n    assert cur.fetchone()[0] == 5\n")
        result = project.run("-q", "-s", f"--overlord-db-url={url}", "tests")
        assert result.returncode == 0, result.stdout + result.stderr
        header = project.run("--co", f"--overlord-db-url={url}", "tests").stdout
        assert "overlord-db: backend url (auto: a database URL was given); url postgresql://postgres@/postgres" in header
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
            names = [r[0] for r in cur.fetchall()]
        conn.close()
        [(template, _)] = templates_in(result.stdout)
        # Theirs are untouched; of ours only the cached template remains (work and fresh clones are gone).
        assert names == sorted(["postgres", "precious", "ovl_lookalike", template]), names
    finally:
        server.stop()


def test_two_pytest_runs_at_once_share_server_and_template(project):
    project.write("test_report.py", REPORT_TEST + USER_TESTS.replace("import pytest", ""))
    runs = [project.popen("-q", "-s", "test_report.py") for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    built = [templates_in(out)[0] for out in outputs]
    assert built[0][0] == built[1][0]  # one template
    assert sorted(reused for _, reused in built) == ["False", "True"]  # built once, under the lock
    assert project.server_processes() == []


def test_fresh_db_commits_are_gone_in_the_next_test(project):
    project.write(
        "test_fresh.py",
        '''
import time
import psycopg2

names = []

def test_commit(overlord_fresh_db):
    names.append(overlord_fresh_db.name)
    conn = psycopg2.connect(overlord_fresh_db.url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO tags (name) VALUES ('committed')")
    conn.close()  # (left open, the drop would still succeed: it is WITH (FORCE))

def test_next(overlord_fresh_db, overlord_server):
    assert overlord_fresh_db.name != names[0]
    conn = psycopg2.connect(overlord_fresh_db.url)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM tags")
    assert cur.fetchone()[0] == 0
    deadline = time.monotonic() + 5  # the previous clone is dropped in the background
    while time.monotonic() < deadline:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (names[0],))
        if cur.fetchone()[0] == 0:
            break
        time.sleep(0.01)
    cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (names[0],))
    assert cur.fetchone()[0] == 0
    conn.close()

def test_open_connection_does_not_block_the_drop(overlord_fresh_db):
    global leaked
    leaked = psycopg2.connect(overlord_fresh_db.url)  # never closed by the test
''',
    )
    project.result("-q", "test_fresh.py").assert_outcomes(passed=3)
    # After the run no clone of ours is left on the server (the spare included).
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(project.datadir)
    conn = psycopg2.connect(server.start())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ovl\\_%%' AND datname NOT LIKE 'ovl\\_t\\_%%'")
            assert cur.fetchall() == []
    finally:
        conn.close()
        server.stop()


def test_readme_fixture_examples_run(project):
    """The README's fixture examples, run as a user would: a test file in a project with plain pytest."""
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Fixtures", 1)[1]
    example = section.split("```python", 1)[1].split("```", 1)[0]
    project.write("tests/test_readme.py", example)
    project.result("-q", "tests/test_readme.py").assert_outcomes(passed=5)


def test_readme_quick_start_runs(project):
    from conftest import REPO

    section = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    project.write("tests/test_quickstart.py", section.split("```python", 1)[1].split("```", 1)[0])
    project.result("-q", "-p", "no:randomly", "tests/test_quickstart.py").assert_outcomes(passed=2)


def test_docker_is_pinged_once_by_the_controller_and_never_under_collect_only(project, tmp_path):
    """The auto backend pings Docker: once per run (xdist workers are told the choice), not at all with --co."""
    import socket
    import threading

    path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    accepted = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()  # not a Docker engine: the ping fails and auto falls back to embedded

    threading.Thread(target=serve, daemon=True).start()
    project.env["DOCKER_HOST"] = f"unix://{path}"
    project.write("test_report.py", REPORT_TEST)
    try:
        listed = project.run("--co", "-q", "test_report.py")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert accepted == []
        result = project.run("-n", "2", "-p", "xdist", "test_report.py", "test_report.py")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "backend embedded (auto: Docker does not answer" in result.stdout
    finally:
        listener.close()
    assert len(accepted) == 1, accepted  # one ping makes one connection; each worker asking would make 3

"""Within ``YoyoMigrator.session(url)`` runs share yoyo's bookkeeping connection, and yet a migration sees
nothing of the session state the one before it left, fails as alone, and the runs after a failure work."""
from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from pytest_overlord_db.errors import MigrationError
from pytest_overlord_db.migrators.yoyo import YoyoMigrator


def _write(folder: Path, steps: list[tuple[str, str]]) -> YoyoMigrator:
    folder.mkdir()
    for number, (apply, rollback) in enumerate(steps, 1):
        (folder / f"{number:04d}.step.py").write_text(f'from yoyo import step\nstep("""{apply}""", """{rollback}""")\n')
    return YoyoMigrator(folder)


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()
    finally:
        conn.close()


LEAKY = [
    ("CREATE TABLE pids (pid int); INSERT INTO pids VALUES (pg_backend_pid()); "
     "CREATE TEMP TABLE scratch (x int); SET search_path = pg_catalog; SET ROLE NONE; SET work_mem = '7MB'", "DROP TABLE pids"),
    ("INSERT INTO public.pids VALUES (pg_backend_pid()); "
     "CREATE TABLE public.seen AS SELECT current_setting('app.flag', true) AS flag, current_setting('search_path') AS path, "
     "current_setting('work_mem') AS mem, "
     "(SELECT count(*) FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't') AS temps", "DROP TABLE public.seen"),
]


@pytest.mark.parametrize("in_session", [True, False])
def test_runs_in_a_session_share_a_connection_and_nothing_else(tmp_path: Path, empty_db_url: str, in_session: bool) -> None:
    migrator = _write(tmp_path / "migrations", LEAKY)
    first, second = migrator.chain()
    with migrator.session(empty_db_url) if in_session else _Nothing():
        migrator.apply(empty_db_url, [first], lock=False, quiet=True)
        if in_session:
            migrator._sessions._spares[empty_db_url].take()  # made ahead on a thread: wait until it is there
        assert _others(empty_db_url) == (2 if in_session else 0)  # the kept backend and the next copy, idle between runs
        migrator.apply(empty_db_url, [second], lock=False, quiet=True)
    assert _others(empty_db_url) == 0
    assert len({pid for (pid,) in _rows(empty_db_url, "SELECT pid FROM pids")}) == 2  # each migration's own
    assert _rows(empty_db_url, "SELECT flag, path, mem, temps FROM seen") == [(None, '"$user", public', "4MB", 0)]
    assert [a.id for a in migrator.applied(empty_db_url)] == [first.id, second.id]


def test_a_setting_of_its_own_does_not_reach_the_next_migration(tmp_path: Path, empty_db_url: str) -> None:
    # RESET leaves a dotted setting defined as '' where a new connection has none: steps never share one.
    migrator = _write(tmp_path / "migrations", [("CREATE TABLE pids (pid int); SET app.flag = 'on'", "DROP TABLE pids"),
                                                LEAKY[1]])
    with migrator.session(empty_db_url):
        migrator.apply(empty_db_url, migrator.chain(), lock=False, quiet=True)
    assert _rows(empty_db_url, "SELECT flag FROM seen") == [(None,)]


@pytest.mark.parametrize("in_session", [True, False])
def test_a_migration_sees_the_database_settings_the_one_before_it_made(tmp_path: Path, empty_db_url: str,
                                                                     in_session: bool) -> None:
    """The next migration's connection is made ahead, while the walk takes its snapshots, but only once the run
    before it is over: a setting that run gave the database (read when a connection starts) is in it."""
    set_flag = "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET app.flag = %L', current_database(), 'on'); END $$"
    unset = "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET app.flag', current_database()); END $$"
    migrator = _write(tmp_path / "migrations", [(set_flag, unset), (
        "CREATE TABLE seen AS SELECT current_setting('app.flag', true) AS flag", "DROP TABLE seen")])
    first, second = migrator.chain()
    try:
        with migrator.session(empty_db_url) if in_session else _Nothing():
            migrator.apply(empty_db_url, [first], lock=False, quiet=True)
            migrator.apply(empty_db_url, [second], lock=False, quiet=True)
        assert _rows(empty_db_url, "SELECT flag FROM seen") == [("on",)]
    finally:
        migrator.rollback(empty_db_url, [first], lock=False, quiet=True)


def test_a_failure_in_a_session_is_reported_and_the_next_run_starts_afresh(tmp_path: Path, empty_db_url: str) -> None:
    migrator = _write(tmp_path / "migrations", [("CREATE TABLE a (id int)", "DROP TABLE a"),
                                                 ("CREATE TABLE b (id int); SELECT 1/0", "DROP TABLE b")])
    first, broken = migrator.chain()
    with migrator.session(empty_db_url):
        with pytest.raises(MigrationError, match="division by zero"):
            migrator.apply(empty_db_url, [first, broken], lock=False, quiet=True)
        assert [a.id for a in migrator.applied(empty_db_url)] == [first.id]
        migrator.rollback(empty_db_url, [first], lock=False, quiet=True)
        migrator.apply(empty_db_url, [first], lock=False, quiet=True)
    assert _rows(empty_db_url, "SELECT count(*) FROM pg_class WHERE relname IN ('a', 'b')") == [(1,)]
    assert _others(empty_db_url) == 0  # the session's connection is closed when it ends


def _others(url: str) -> object:
    """How many other connections are in the database."""
    return _rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")[0][0]


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

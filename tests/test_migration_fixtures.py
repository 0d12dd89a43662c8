"""Data-migration tests (overlord_migrator), committed databases of a wider scope, and --overlord-keep-failed,
in whole pytest runs of a throwaway project whose second migration transforms data."""
from __future__ import annotations

import re
import shutil

import psycopg2
import pytest

pytestmark = pytest.mark.slow

PEOPLE = '''
from yoyo import step

step("CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL)", "DROP TABLE people")
'''
# Splits a name into two columns, and joins them again on the way back: a data migration both ways.
SPLIT = '''
from yoyo import step

step(
    """
    ALTER TABLE people ADD COLUMN first_name text, ADD COLUMN last_name text;
    UPDATE people SET first_name = split_part(name, ' ', 1), last_name = nullif(substr(name, length(split_part(name, ' ', 1)) + 2), '');
    ALTER TABLE people DROP COLUMN name;
    """,
    """
    ALTER TABLE people ADD COLUMN name text;
    UPDATE people SET name = concat_ws(' ', first_name, last_name);
    ALTER TABLE people ALTER COLUMN name SET NOT NULL, DROP COLUMN first_name, DROP COLUMN last_name;
    """,
)
'''
TAGS = '''
from yoyo import step

step("CREATE TABLE tags (id serial PRIMARY KEY, person_id int REFERENCES people(id))", "DROP TABLE tags")
'''

MIGRATOR_TESTS = '''
import psycopg2
import pytest
from pytest_overlord_db import ConfigError


def test_split_forward_and_back(overlord_migrator):
    assert overlord_migrator.current() is None                       # an empty database
    assert overlord_migrator.migrate_to("0001.people") == ["0001.people"]
    overlord_migrator.execute("INSERT INTO people (name) VALUES ('Ada Lovelace'), ('Plato'), ('Jean Paul Sartre')")
    assert overlord_migrator.migrate_up() == ["0002.split-name"]
    assert overlord_migrator.fetch("SELECT first_name, last_name FROM people ORDER BY id") == [
        ("Ada", "Lovelace"), ("Plato", None), ("Jean", "Paul Sartre")]
    overlord_migrator.execute("INSERT INTO people (first_name, last_name) VALUES ('Alan', 'Turing')")
    assert overlord_migrator.rollback_to("0001.people") == ["0002.split-name"]
    assert overlord_migrator.fetch("SELECT name FROM people ORDER BY id") == [
        ("Ada Lovelace",), ("Plato",), ("Jean Paul Sartre",), ("Alan Turing",)]
    assert overlord_migrator.applied() == ["0001.people"]


def test_targets_by_number_in_both_directions(overlord_migrator):
    assert overlord_migrator.migrate_to(3) == ["0001.people", "0002.split-name", "0003.tags"]
    assert overlord_migrator.migrate_to("2") == ["0003.tags"]        # back: 0003 rolled back, 0002 kept
    assert overlord_migrator.current() == "0002.split-name"
    assert overlord_migrator.migrate_down() == ["0002.split-name"]
    assert overlord_migrator.rollback_to(None) == ["0001.people"]
    conn = psycopg2.connect(overlord_migrator.url)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('people')")
        assert cur.fetchone() == (None,)
    conn.close()


def test_rollback_to_refuses_to_apply(overlord_migrator):
    overlord_migrator.migrate_to(1)
    with pytest.raises(ConfigError, match=r"0003.tags is not applied"):
        overlord_migrator.rollback_to("0003.tags")
    with pytest.raises(ConfigError, match=r"2 migration\\(s\\) are left"):
        overlord_migrator.migrate_up(3)


def test_an_open_transaction_is_named_not_waited_for(overlord_migrator):
    overlord_migrator.migrate_to(1)
    other = psycopg2.connect(overlord_migrator.url)
    with other.cursor() as cur:
        cur.execute("INSERT INTO people (name) VALUES ('Uncommitted Row')")  # psycopg2 began a transaction
    with pytest.raises(ConfigError, match=r"open transaction"):
        overlord_migrator.migrate_up()
    other.commit()
    assert overlord_migrator.migrate_up() == ["0002.split-name"]
    other.close()


def test_bad_target(overlord_migrator):
    overlord_migrator.migrate_to("0009")


@pytest.mark.overlord_migrator(start="0002.split-name")
def test_starts_at_the_marked_migration(overlord_migrator):
    assert overlord_migrator.applied() == ["0001.people", "0002.split-name"]


@pytest.mark.overlord_migrator(start=7)
def test_bad_start(overlord_migrator):
    pass
'''


@pytest.fixture
def people(project):
    shutil.rmtree(project.root / "migrations")
    project.write("migrations/0001.people.py", PEOPLE)
    project.write("migrations/0002.split-name.py", SPLIT)
    project.write("migrations/0003.tags.py", TAGS)
    shutil.rmtree(project.root / "seeds")
    return project


def test_overlord_migrator_moves_data_both_ways_and_names_a_bad_target(people):
    people.write("tests/test_split.py", MIGRATOR_TESTS)
    result = people.result("-q", "--strict-markers", "tests")
    result.assert_outcomes(passed=5, failed=1, errors=1)
    out = "\n".join(result.outlines)
    failure = out.split("_ test_bad_target _", 1)[1].split("\n___", 1)[0]
    assert "Unknown migration '0009': give an id or its number. Migrations: 0001.people, 0002.split-name, 0003.tags." in failure
    assert "stepper.py" not in failure and "migrators/base.py" not in failure  # the test's line, not our frames
    setup = out.split("at setup of test_bad_start", 1)[1].split("\n___", 1)[0].split("\n==", 1)[0]
    assert "overlord-db: Unknown migration '7': give an id or its number." in setup
    assert "Traceback" not in setup and len(setup.strip().splitlines()) < 4, setup  # one paragraph
    assert not people.server_processes()


SQL_FOLDER_TEST = '''
def test_split_with_sql_files(overlord_migrator):
    assert overlord_migrator.ids == ["001_people", "002_split_name"]
    overlord_migrator.migrate_to(1)
    overlord_migrator.execute("INSERT INTO people (name) VALUES ('Grace Hopper')")
    overlord_migrator.migrate_up()
    assert overlord_migrator.fetch("SELECT first_name, last_name FROM people") == [("Grace", "Hopper")]
    overlord_migrator.migrate_down()
    assert overlord_migrator.fetch("SELECT name FROM people") == [("Grace Hopper",)]
    assert overlord_migrator.applied() == ["001_people"]
'''


def test_overlord_migrator_works_through_any_migrator(project):
    # The seed's SQL-folder layout: the fixture talks to the Migrator interface, not to yoyo.
    shutil.rmtree(project.root / "migrations")
    shutil.rmtree(project.root / "seeds")
    split = SPLIT.split('"""')
    project.write("migrations/versions/001_people.sql", "CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL);")
    project.write("migrations/rollbacks/001_people_rollback.sql", "DROP TABLE people;")
    project.write("migrations/versions/002_split_name.sql", split[1])
    project.write("migrations/rollbacks/002_split_name_rollback.sql", split[3])
    project.write("tests/test_sql.py", SQL_FOLDER_TEST)
    result = project.result("-q", "tests")
    assert result.ret == 0, "\n".join(result.outlines)
    result.assert_outcomes(passed=1)


ORDERED = '''
import psycopg2
from conftest import MODULE_DATABASES


def rows(db):
    conn = psycopg2.connect(db.url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM tags ORDER BY name")
        found = [r[0] for r in cur.fetchall()]
    conn.close()
    return found


def add(db, name):
    conn = psycopg2.connect(db.url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO tags (name) VALUES (%s)", (name,))
    conn.close()


def test_first(overlord_module_db, shared):
    MODULE_DATABASES.append(overlord_module_db.name)
    add(overlord_module_db, "{module}-1")
    add(shared, "{module}")
    assert rows(overlord_module_db) == ["{module}-1"]


def test_second_sees_the_first(overlord_module_db):
    add(overlord_module_db, "{module}-2")
    assert rows(overlord_module_db) == ["{module}-1", "{module}-2"]


def test_the_session_database(shared):
    assert rows(shared)[-1] == "{module}"
'''
SESSION_FIXTURE = '''
import pytest

MODULE_DATABASES = []


@pytest.fixture(scope="session")
def shared(overlord_fresh_db_factory):
    with overlord_fresh_db_factory() as db:
        yield db
'''
AFTERWARDS = '''
import time

import psycopg2
from conftest import MODULE_DATABASES


def test_module_databases_are_gone_and_the_session_one_stays(overlord_server, shared):
    conn = psycopg2.connect(overlord_server.admin_url)
    conn.autocommit = True
    cur = conn.cursor()
    deadline = time.monotonic() + 5  # dropped in the background, right after each module
    while True:
        cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (MODULE_DATABASES + [shared.name],))
        left = {r[0] for r in cur.fetchall()}
        if left == {shared.name} or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    conn.close()
    assert len(set(MODULE_DATABASES)) == 2 and left == {shared.name}
'''


def test_module_and_session_databases_share_rows_in_order_and_are_dropped(project):
    project.write("tests/conftest.py", SESSION_FIXTURE)
    project.write("tests/test_a.py", ORDERED.replace("{module}", "a"))
    project.write("tests/test_b.py", ORDERED.replace("{module}", "b"))  # its own module database: no "a-1" in it
    project.write("tests/test_z.py", AFTERWARDS)
    result = project.result("-q", "tests/test_a.py", "tests/test_b.py", "tests/test_z.py")
    assert result.ret == 0, "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=7)
    assert not project.server_processes()


KEPT_TESTS = '''
import psycopg2


def test_fresh_fails(overlord_fresh_db):
    conn = psycopg2.connect(overlord_fresh_db.url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO tags (name) VALUES ('evidence')")
    conn.close()
    assert False, "look at the database"


def test_migrator_fails(overlord_migrator):
    overlord_migrator.migrate_to(1)
    assert False


def test_fresh_passes(overlord_fresh_db):
    pass


def test_module_db_fails(overlord_module_db):
    assert False


def test_shared_fails(shared):
    assert False


def test_other_passes(other):
    pass
'''
KEPT_FIXTURES = '''
import pytest


@pytest.fixture(scope="session")
def shared(overlord_fresh_db_factory):
    with overlord_fresh_db_factory(used_by="shared") as db:
        yield db


@pytest.fixture(scope="session")
def other(overlord_fresh_db_factory):  # alive while tests fail, but none of them used it: not kept
    with overlord_fresh_db_factory(used_by="other") as db:
        print("OTHER", db.name)
        yield db
'''


def kept_names(output: str) -> list[str]:
    section = output.split("databases kept for debugging", 1)[1]
    return re.findall(r": (ovl_\w+) at postgresql://", section)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_keep_failed_keeps_failed_tests_databases_until_the_next_run(project, workers):
    # Under xdist the workers' databases reach the controller's summary, and the server stays up
    # whichever worker is the last one out.
    project.write("tests/test_kept.py", KEPT_TESTS)
    project.write("tests/conftest.py", KEPT_FIXTURES)
    first = project.result("-q", "-s", "-p", "no:randomly", "--overlord-keep-failed", *workers, "tests")
    first.assert_outcomes(passed=2, failed=4)
    out = "\n".join(first.outlines)
    names = kept_names(out)
    kept_for = out.split("kept for debugging", 1)[1]
    assert len(names) == 4 and "test_fresh_passes" not in kept_for and "test_shared_fails" in kept_for, out
    assert not set(re.findall(r"OTHER (ovl_\w+)", out)) & set(names)
    assert "keeps running" in out and project.server_processes()  # reachable after the run
    admin = f"postgresql://postgres@/postgres?host={project.datadir}"
    conn = psycopg2.connect(admin)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))
            assert sorted(r[0] for r in cur.fetchall()) == sorted(names)
        fresh = next(n for n in names if "_f_" in n)
        evidence = psycopg2.connect(f"postgresql://postgres@/{fresh}?host={project.datadir}")
        with evidence.cursor() as cur:
            cur.execute("SELECT name FROM tags")
            assert cur.fetchall() == [("evidence",)]
        evidence.close()
    finally:
        conn.close()

    project.write("tests/test_kept.py", "def test_ok(overlord_fresh_db):\n    pass\n")
    project.write("tests/conftest.py", "")
    second = project.result("-q", "tests")
    second.assert_outcomes(passed=1)
    dropped = [line for line in second.outlines if "kept by an earlier run" in line]
    assert sorted(re.findall(r"dropped (ovl_\w+)", "\n".join(dropped))) == sorted(names)
    assert not project.server_processes()  # the second run was the last one out: it stopped the server


def test_without_keep_failed_nothing_is_kept(project):
    project.write("tests/test_kept.py", KEPT_TESTS)
    project.write("tests/conftest.py", KEPT_FIXTURES)
    result = project.result("-q", "tests")
    result.assert_outcomes(passed=2, failed=4)
    assert "kept for debugging" not in "\n".join(result.outlines)
    assert not project.server_processes()

"""pgvector values as values on every fixture's connection; off by option; skipped where the extension is absent."""
from __future__ import annotations

import asyncio

import pytest
from pgvector import Vector

from pytest_overlord_db.config import resolve
from pytest_overlord_db.errors import ConfigError

TABLE = "CREATE TEMP TABLE emb (id int, v vector(3)) ON COMMIT DROP"
VALUE = [0.5, 0.25, 0.0]


@pytest.mark.asyncio
async def test_asyncpg_reads_and_writes_vectors(overlord_db):
    await overlord_db.execute(TABLE)
    await overlord_db.execute("INSERT INTO emb VALUES (1, $1), (2, '[1,2,3]')", VALUE)  # a list goes in as a vector
    rows = await overlord_db.fetch("SELECT v FROM emb ORDER BY id")
    assert [type(r["v"]) for r in rows] == [Vector, Vector]
    assert [r["v"].to_list() for r in rows] == [VALUE, [1.0, 2.0, 3.0]]


@pytest.mark.asyncio(loop_scope="module")
async def test_asyncpg_in_a_wider_loop(overlord_db):
    assert (await overlord_db.fetchval("SELECT '[0.5,0.25,0]'::vector")).to_list() == VALUE


@pytest.mark.asyncio
async def test_through_the_pool(overlord_pool):
    assert (await overlord_pool.fetchval("SELECT '[0.5,0.25,0]'::vector")).to_list() == VALUE


def test_psycopg2(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute(TABLE)
        cur.execute("INSERT INTO emb VALUES (1, %s)", (Vector(VALUE),))
        cur.execute("SELECT v FROM emb")
        (value,) = cur.fetchone()
    assert isinstance(value, Vector) and value.to_list() == VALUE


def test_psycopg3(overlord_psycopg):
    overlord_psycopg.execute(TABLE)
    overlord_psycopg.execute("INSERT INTO emb VALUES (1, %s)", (Vector(VALUE),))
    (value,) = overlord_psycopg.execute("SELECT v FROM emb").fetchone()
    assert isinstance(value, Vector) and value.to_list() == VALUE


@pytest.mark.asyncio
async def test_psycopg3_async(overlord_psycopg_async):
    cur = await overlord_psycopg_async.execute("SELECT '[0.5,0.25,0]'::vector")
    (value,) = await cur.fetchone()
    assert isinstance(value, Vector) and value.to_list() == VALUE


def test_a_database_without_the_extension_gets_no_registration_and_no_error(empty_db_url):
    import psycopg2.extensions

    from pytest_overlord_db.connections import AsyncConnections, connect_sync
    from pytest_overlord_db.connections.psycopg3 import PsycopgConnections

    conn = connect_sync(empty_db_url, vectors=True)
    try:
        assert conn.status == psycopg2.extensions.STATUS_READY  # the lookup left no transaction open
        with conn.cursor() as cur:
            cur.execute("SELECT to_regtype('vector'), '1'::text")
            assert cur.fetchone() == (None, "1")
    finally:
        conn.close()
    psycopg = PsycopgConnections(lambda: empty_db_url)
    try:
        assert psycopg.begin_sync().execute("SELECT 1").fetchone() == (1,)
        assert psycopg.end(psycopg.sync)
        assert psycopg.end(psycopg.begin_async())
    finally:
        psycopg.close()

    async def asyncpg_side() -> None:
        conns = AsyncConnections(lambda: empty_db_url, vectors=True)
        got = await conns.get(keep=True)
        assert await got.fetchval("SELECT 1") == 1
        await got.close()

    asyncio.run(asyncpg_side())


@pytest.mark.parametrize("environ, expected, source", [
    ({}, True, "default"),
    ({"OVERLORD_PGVECTOR_TYPES": "off"}, False, "env OVERLORD_PGVECTOR_TYPES"),
    ({"OVERLORD_PGVECTOR_TYPES": "On"}, True, "env OVERLORD_PGVECTOR_TYPES"),
])
def test_the_setting_and_its_source(tmp_path, environ, expected, source):
    (tmp_path / "migrations").mkdir()
    settings = resolve(tmp_path, environ=environ)
    assert settings.pgvector_types is expected and settings.sources["pgvector_types"] == source


def test_a_wrong_value_names_its_source(tmp_path):
    (tmp_path / "migrations").mkdir()
    with pytest.raises(ConfigError, match=r"pgvector-types must be on or off, not 'maybe' \(from env OVERLORD_PGVECTOR_TYPES\)"):
        resolve(tmp_path, environ={"OVERLORD_PGVECTOR_TYPES": "maybe"})


TEXT_TESTS = '''
import pytest

@pytest.mark.asyncio
async def test_asyncpg(overlord_db):
    assert await overlord_db.fetchval("SELECT '[0.5,0.25,0]'::vector") == "[0.5,0.25,0]"

def test_psycopg2(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT '[0.5,0.25,0]'::vector")
    assert cur.fetchone() == ("[0.5,0.25,0]",)

def test_psycopg3(overlord_psycopg):
    assert overlord_psycopg.execute("SELECT '[0.5,0.25,0]'::vector").fetchone() == ("[0.5,0.25,0]",)
'''


@pytest.mark.slow
def test_turned_off_by_the_flag_or_the_ini_setting(project):
    project.write("tests/test_text.py", TEXT_TESTS)
    flag = project.result("-v", "--overlord-no-pgvector-types", "tests")
    flag.assert_outcomes(passed=3)
    assert "overlord-db:   pgvector_types = False  [command line --overlord-no-pgvector-types]" in flag.outlines
    project.write("pytest.ini", "[pytest]\noverlord_pgvector_types = off\n")
    project.result("-q", "tests").assert_outcomes(passed=3)
    project.write("pytest.ini", "[pytest]\n")
    project.result("-q", "tests").assert_outcomes(failed=3)  # on by default: the values are Vectors


def test_through_a_sqlalchemy_session(overlord_sqla_session):
    from sqlalchemy import text

    assert overlord_sqla_session.scalar(text("SELECT '[0.5,0.25,0]'::vector")).to_list() == VALUE


@pytest.mark.asyncio
async def test_through_a_sqlalchemy_async_session(overlord_sqla_async_session):
    from sqlalchemy import text

    assert (await overlord_sqla_async_session.scalar(text("SELECT '[0.5,0.25,0]'::vector"))).to_list() == VALUE

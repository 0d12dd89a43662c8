"""A project in the seed's second layout: migrations/versions/NNN_name.sql + migrations/rollbacks/NNN_name_rollback.sql.

The seed's own 001 initial schema and its rollback (fixed as design.md says:
the extension is ``vector``, no pgcrypto), plus a 002, run end to end: plain
pytest with every fixture and --seed, the CLI, and the round trip.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg2
import pytest
from typer.testing import CliRunner

from pytest_overlord_db import roundtrip
from pytest_overlord_db.cli import app
from pytest_overlord_db.config import Settings
from pytest_overlord_db.errors import MigrationError
from pytest_overlord_db.migrators import for_folder
from pytest_overlord_db.migrators.sqlfolders import SqlFoldersMigrator
from pytest_overlord_db.servers.base import ServerFacts
from pytest_overlord_db.template import Templates

REPO = Path(__file__).resolve().parent.parent

V001 = """-- Create core tables for The Robot Overlord
CREATE EXTENSION IF NOT EXISTS "citext";
CREATE EXTENSION IF NOT EXISTS "vector";

CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL UNIQUE,
    google_id VARCHAR(255) NOT NULL UNIQUE,
    username VARCHAR(100) NOT NULL,
    role VARCHAR(20) NOT NULL CHECK (role IN ('citizen', 'moderator', 'admin', 'superadmin')),
    loyalty_score INTEGER DEFAULT 0,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE TABLE topics (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    title VARCHAR(500) NOT NULL,
    description TEXT NOT NULL,
    author_id UUID REFERENCES users(id) ON DELETE SET NULL,
    status VARCHAR(20) NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected'))
);

CREATE INDEX idx_users_loyalty_score ON users(loyalty_score DESC) WHERE loyalty_score > 0;
CREATE INDEX idx_topics_status ON topics(status);
"""
R001 = """-- Rollback initial schema
DROP TABLE IF EXISTS topics;
DROP TABLE IF EXISTS users;
-- Note: Extensions are not dropped as they might be used by other applications
"""
V002 = "CREATE TABLE tags (id SERIAL PRIMARY KEY, name VARCHAR(50) UNIQUE NOT NULL, embedding vector(3));\n"
R002 = "DROP TABLE tags;\n"
SEED = "INSERT INTO users (email, google_id, username, role) VALUES ('a@x.io', 'g1', 'ada', 'citizen') ON CONFLICT DO NOTHING;\n"
ACCEPTED = """
[[tool.overlord_db.accepted]]
migration = "001_initial_schema"
object = "extension citext"
reason = "Extensions are kept on rollback (seed spec)."

[[tool.overlord_db.accepted]]
migration = "001_initial_schema"
object = "extension vector"
reason = "Extensions are kept on rollback (seed spec)."
"""


def write_layout(root: Path, *, accepted: bool = True) -> Path:
    files = {
        "migrations/versions/001_initial_schema.sql": V001,
        "migrations/rollbacks/001_initial_schema_rollback.sql": R001,
        "migrations/versions/002_add_tags.sql": V002,
        "migrations/rollbacks/002_add_tags_rollback.sql": R002,
        "seeds/development/users.sql": SEED,
    }
    if accepted:
        files["pyproject.toml"] = "[tool.overlord_db]\n" + ACCEPTED
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "migrations"


@pytest.fixture
def sql_templates(overlord_server, tmp_path):
    settings = Settings(root=tmp_path, migrations_dir=tmp_path / "migrations", seeds_dir=tmp_path / "seeds",
                        project=str(tmp_path))  # tmp_path names are cut short: see conftest.templates
    manager = Templates(overlord_server.admin_url, settings, ServerFacts(overlord_server.version_num, overlord_server.version))
    yield manager
    manager.close()


def test_the_layout_is_detected_and_read_in_version_order(tmp_path):
    folder = write_layout(tmp_path)
    (folder / "versions" / "010_later.sql").write_text("SELECT 1;\n")  # 10 sorts after 2 by number, not by text
    migrator = for_folder(folder)
    assert isinstance(migrator, SqlFoldersMigrator)
    chain = migrator.chain()
    assert [(m.id, m.number, m.reversible) for m in chain] == [
        ("001_initial_schema", 1, True), ("002_add_tags", 2, True), ("010_later", 10, False)]
    assert migrator.required_extensions() == {"citext", "vector"}
    assert for_folder(REPO / "migrations").name == "yoyo"


def test_bad_file_names_and_duplicate_versions_are_one_clear_error(tmp_path):
    folder = write_layout(tmp_path)
    (folder / "versions" / "initial.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"initial\.sql is not named NNN_name\.sql"):
        for_folder(folder).chain()
    (folder / "versions" / "initial.sql").unlink()
    (folder / "versions" / "0002_again.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="both have version 2"):
        for_folder(folder).chain()


def test_bookkeeping_as_the_seed_describes_it(tmp_path, empty_db_url):
    migrator = for_folder(write_layout(tmp_path))
    done = migrator.apply(empty_db_url, migrator.chain())
    assert [a.id for a in done] == ["001_initial_schema", "002_add_tags"]
    assert migrator.apply(empty_db_url, migrator.chain()) == []  # nothing pending any more
    conn = psycopg2.connect(empty_db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'schema_migrations' ORDER BY ordinal_position")
            assert [r[0] for r in cur.fetchall()] == ["version", "name", "applied_at", "execution_time_ms"]
            cur.execute("SELECT version, name, applied_at IS NOT NULL, execution_time_ms >= 0 FROM schema_migrations ORDER BY version")
            assert cur.fetchall() == [(1, "initial_schema", True, True), (2, "add_tags", True, True)]
    finally:
        conn.close()
    assert [a.id for a in migrator.rollback(empty_db_url, migrator.chain())] == ["002_add_tags", "001_initial_schema"]
    assert migrator.applied(empty_db_url) == []


def test_a_failing_migration_names_its_statement_and_leaves_nothing(tmp_path, empty_db_url):
    folder = write_layout(tmp_path)
    (folder / "versions" / "003_broken.sql").write_text("CREATE TABLE half (id int);\nALTER TABLE nowhere ADD COLUMN x int;\n")
    migrator = for_folder(folder)
    with pytest.raises(MigrationError) as failure:
        migrator.apply(empty_db_url, migrator.chain())
    text = str(failure.value)
    assert "Migration 003_broken failed to apply" in text and 'relation "nowhere" does not exist' in text
    assert "ALTER TABLE nowhere ADD COLUMN x int" in text and "line 2 of" in text
    assert [a.id for a in migrator.applied(empty_db_url)] == ["001_initial_schema", "002_add_tags"]
    conn = psycopg2.connect(empty_db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('half')")
            assert cur.fetchone() == (None,)  # the file's transaction was rolled back whole
    finally:
        conn.close()


def test_round_trip_on_the_layout_correct_and_broken(tmp_path, sql_templates):
    folder = write_layout(tmp_path)
    from pytest_overlord_db.config import read_accepted

    report = roundtrip.run(sql_templates, for_folder(folder), read_accepted(tmp_path))
    assert report.ok, report.render()
    assert [v.status for v in report.migrations] == ["ok", "ok"]

    (folder / "rollbacks" / "002_add_tags_rollback.sql").write_text("ALTER TABLE tags DROP COLUMN embedding;\n")
    (folder / "versions" / "003_no_way_back.sql").write_text("CREATE TABLE kept (id int);\n")
    report = roundtrip.run(sql_templates, for_folder(folder), read_accepted(tmp_path))
    statuses = {v.id: v.status for v in report.migrations}
    assert statuses == {"001_initial_schema": "ok", "002_add_tags": "irreversible", "003_no_way_back": "no_rollback"}
    broken = next(v for v in report.migrations if v.id == "002_add_tags")
    assert "+ left behind: table public.tags" in broken.diff
    assert not [k for v in report.migrations for k in v.diff.splitlines() if "schema_migrations" in k]


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(root)
    return CliRunner().invoke(app, list(args))


def test_cli_status_migrate_rollback_roundtrip_and_new(tmp_path, empty_db_url, monkeypatch, overlord_server):
    for var in ("DATABASE_URL", "OVERLORD_ENV", "OVERLORD_DB_URL", "OVERLORD_MIGRATOR"):
        monkeypatch.delenv(var, raising=False)
    write_layout(tmp_path)
    url = ("--database-url", empty_db_url)

    dry = cli(tmp_path, monkeypatch, "migrate", "--dry-run", *url)
    assert dry.exit_code == 0 and "Would apply 2 migration(s)" in dry.stdout and "CREATE TABLE users" in dry.stdout

    result = cli(tmp_path, monkeypatch, "migrate", "--target", "1", *url)
    assert result.exit_code == 0, result.output
    status = json.loads(cli(tmp_path, monkeypatch, "status", "--format", "json", *url).stdout)
    assert [a["id"] for a in status["applied"]] == ["001_initial_schema"] and status["pending"] == ["002_add_tags"]
    assert status["applied"][0]["duration_ms"] is not None

    assert cli(tmp_path, monkeypatch, "migrate", *url).exit_code == 0
    dry = cli(tmp_path, monkeypatch, "rollback", "1", "--dry-run", *url)
    assert dry.exit_code == 0 and "DROP TABLE tags" in dry.stdout
    result = cli(tmp_path, monkeypatch, "rollback", "1", *url)
    assert result.exit_code == 0 and "002_add_tags" in result.stdout, result.output
    status = json.loads(cli(tmp_path, monkeypatch, "status", "--format", "json", *url).stdout)
    assert status["pending"] == ["002_add_tags"]

    created = cli(tmp_path, monkeypatch, "new", "-m", "Add badges")
    assert created.exit_code == 0, created.output
    assert (tmp_path / "migrations" / "versions" / "003_add_badges.sql").is_file()
    assert (tmp_path / "migrations" / "rollbacks" / "003_add_badges_rollback.sql").is_file()
    (tmp_path / "migrations" / "versions" / "003_add_badges.sql").write_text("CREATE TABLE badges (id int);\n")
    (tmp_path / "migrations" / "rollbacks" / "003_add_badges_rollback.sql").write_text("DROP TABLE badges;\n")

    rt = cli(tmp_path, monkeypatch, "roundtrip", "--format", "json", "--database-url", overlord_server.admin_url)
    assert rt.exit_code == 0, rt.output
    payload = json.loads(rt.stdout)
    assert [m["id"] for m in payload["migrations"]] == ["001_initial_schema", "002_add_tags", "003_add_badges"]
    assert payload["ok"] is True


@pytest.mark.slow
def test_a_project_in_the_layout_runs_its_tests_with_plain_pytest(project):
    shutil.rmtree(project.root / "migrations")
    (project.root / "yoyo.ini").unlink()
    shutil.rmtree(project.root / "seeds")
    write_layout(project.root)
    project.write("tests/test_app.py", '''
import psycopg2
import pytest

@pytest.mark.asyncio
async def test_async(overlord_db):
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('t')")
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 1

def test_sync_sees_the_seed(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT username FROM users")
    assert cur.fetchall() == [("ada",)]

def test_fresh(overlord_fresh_db):
    conn = psycopg2.connect(overlord_fresh_db.url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone() == (2,)
    conn.close()
''')
    result = project.result("-q", "--seed=development", "--overlord-roundtrip", "tests")
    result.assert_outcomes(passed=8)  # 3 tests; round-trip items: 2 migrations, the full cycle, the seeded walk, the accepted list
    assert not project.server_processes()


def test_a_rollback_file_of_only_comments_is_refused_not_a_silent_no_op(tmp_path, empty_db_url):
    folder = write_layout(tmp_path)
    (folder / "rollbacks" / "002_add_tags_rollback.sql").write_text("-- TODO: undo the tags table\n")
    migrator = for_folder(folder)
    chain = migrator.chain()
    assert [m.reversible for m in chain] == [True, False]
    migrator.apply(empty_db_url, chain)
    with pytest.raises(MigrationError, match="cannot be rolled back: .*002_add_tags_rollback.sql holds only comments"):
        migrator.rollback(empty_db_url, chain[1:])
    assert [a.id for a in migrator.applied(empty_db_url)] == ["001_initial_schema", "002_add_tags"]  # record kept
    assert all(a.applied_at is not None and a.applied_at.tzinfo is None for a in migrator.applied(empty_db_url))

"""Every overlord-db command through typer's runner (and a pty for the prompt), against a real server."""
from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from typer.testing import CliRunner

from pytest_overlord_db import schema
from pytest_overlord_db.cli import app
from pytest_overlord_db.migrators.yoyo import YoyoMigrator

REPO = Path(__file__).resolve().parent.parent
IDS = ["0001.initial-schema", "0002.add-queue-tables", "0003.add-materialized-views", "0004.add-governance-tables", "0005.add-rbac-system"]


def cli(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def tables(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def snap(url: str) -> schema.Snapshot:
    conn = psycopg2.connect(url)
    try:
        return schema.take(conn, bookkeeping=YoyoMigrator.bookkeeping)  # yoyo creates its tables on connect
    finally:
        conn.close()


def test_dry_run_changes_nothing(app_project, empty_db_url):
    before = snap(empty_db_url)
    result = cli("migrate", "--dry-run", "--database-url", empty_db_url)
    assert result.exit_code == 0, result.output
    assert "Would apply 5 migration(s)" in result.stdout
    assert "CREATE TABLE users" in result.stdout and "Python function 'create_leaderboard_view'" in result.stdout
    assert snap(empty_db_url) == before


def test_migrate_to_target_then_status_with_timings(app_project, empty_db_url):
    result = cli("migrate", "--target", "3", "--database-url", empty_db_url)
    assert result.exit_code == 0, result.output
    assert re.search(r"Applied 3 migration\(s\)", result.stdout)
    assert "users" in tables(empty_db_url) and "appeals" not in tables(empty_db_url)

    status = cli("status", "--database-url", empty_db_url)
    assert status.exit_code == 0
    for mid in IDS[:3]:
        assert re.search(rf"{re.escape(mid)}\s+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s+\d+\.\d ms", status.stdout), status.stdout
    assert "Pending (2):" in status.stdout and IDS[3] in status.stdout

    payload = json.loads(cli("status", "--format", "json", "--database-url", empty_db_url).stdout)
    assert [a["id"] for a in payload["applied"]] == IDS[:3]
    assert all(a["duration_ms"] > 0 for a in payload["applied"])
    assert payload["pending"] == IDS[3:]


def test_migrate_all_shows_progress_then_rollback_to_target_and_by_one(app_project, empty_db_url):
    result = cli("migrate", "--database-url", empty_db_url)
    assert result.exit_code == 0, result.output
    assert "[5/5] apply 0005.add-rbac-system" in result.stderr

    dry = cli("rollback", "1", "--dry-run", "--database-url", empty_db_url)
    assert dry.exit_code == 0 and "Would roll back 4 migration(s)" in dry.stdout and "DROP TABLE IF EXISTS roles" in dry.stdout
    assert "roles" in tables(empty_db_url)

    result = cli("rollback", "0002", "--database-url", empty_db_url)
    assert result.exit_code == 0, result.output
    assert "Rolled back 3 migration(s)" in result.stdout
    assert {"users", "private_messages"} <= tables(empty_db_url) and "appeals" not in tables(empty_db_url)

    result = cli("rollback", "--database-url", empty_db_url)
    assert result.exit_code == 0 and "0002.add-queue-tables" in result.stdout
    assert "private_messages" not in tables(empty_db_url) and "users" in tables(empty_db_url)


def test_unknown_target(app_project, empty_db_url):
    result = cli("migrate", "--target", "42", "--database-url", empty_db_url)
    assert result.exit_code == 2 and "Unknown migration '42'" in result.stderr and "0001.initial-schema" in result.stderr


def test_seeding_twice_and_unknown_environment(app_project, empty_db_url):
    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    for _ in range(2):
        result = cli("seed", "--environment", "development", "--database-url", empty_db_url)
        assert result.exit_code == 0, result.output
        assert "ok      topics.sql" in result.stdout and "ok      users.sql" in result.stdout
    conn = psycopg2.connect(empty_db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM topics)")
        assert cur.fetchone() == (5, 3)
    conn.close()

    result = cli("seed", "--environment", "staging", "--database-url", empty_db_url)
    assert result.exit_code == 2
    assert "Unknown seed environment 'staging'" in result.stderr and "development, production" in result.stderr


def test_failing_seed_file_is_reported_and_rolled_back(app_project, empty_db_url):
    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    (app_project / "seeds" / "development" / "zz-bad.sql").write_text(
        "INSERT INTO tags (name) VALUES ('half');\nINSERT INTO users (email) VALUES ('no-google-id');\n")
    result = cli("seed", "--database-url", empty_db_url)
    assert result.exit_code == 1
    assert "FAILED  zz-bad.sql" in result.stdout and "ok      users.sql" in result.stdout
    assert "zz-bad.sql" in result.stderr and "not-null constraint" in result.stderr
    conn = psycopg2.connect(empty_db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tags")
        assert cur.fetchone() == (0,)  # the failed file's first insert was rolled back with it
    conn.close()


def test_unset_variable_in_yoyo_ini(app_project):
    result = cli("status", "--env", "production")
    assert result.exit_code == 2
    assert "uses ${DATABASE_URL}, but the environment variable DATABASE_URL is not set" in result.stderr


def test_environment_section_and_precedence(app_project, empty_db_url, monkeypatch):
    (app_project / "yoyo.ini").write_text(
        (app_project / "yoyo.ini").read_text() + f"\n[ci]\ndatabase = {empty_db_url}\n".replace("%", "%%"))
    assert cli("status", "--env", "ci").exit_code == 0
    monkeypatch.setenv("OVERLORD_ENV", "ci")
    assert "Database:" in cli("status").stdout
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:from-env@127.0.0.1:1/x")  # beats the section
    result = cli("status")
    assert result.exit_code == 2 and "u:***@127.0.0.1:1/x" in result.stderr and "from-env" not in result.stderr


def test_failing_migration_leaves_database_exactly_as_before(app_project, empty_db_url):
    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    before = snap(empty_db_url)
    (app_project / "migrations" / "0006.breaks.py").write_text(
        'from yoyo import step\nstep("""\n    CREATE TABLE half_done (id int);\n    ALTER TABLE users ADD COLUMN karma int;\n'
        '    INSERT INTO missing_table VALUES (1);\n""", "DROP TABLE half_done; ALTER TABLE users DROP COLUMN karma")\n')
    result = cli("migrate", "--database-url", empty_db_url)
    assert result.exit_code == 1
    assert "Migration 0006.breaks failed to apply" in result.stderr
    assert 'relation "missing_table" does not exist' in result.stderr
    assert "INSERT INTO missing_table VALUES (1);" in result.stderr and "line 5" in result.stderr
    after = snap(empty_db_url)
    assert not schema.compare(before, after), schema.compare(before, after).render()
    assert "0006.breaks" in cli("status", "--database-url", empty_db_url).stdout.split("Pending")[1]


def test_bad_url_never_shows_the_password(app_project):
    for command in (["status"], ["migrate"], ["rollback"], ["seed"], ["roundtrip"]):
        result = cli(*command, "--database-url", "postgresql://robot:hunter2@127.0.0.1:1/overlord")
        assert result.exit_code == 2, (command, result.output)
        assert "hunter2" not in result.output
        assert "robot:***@127.0.0.1:1/overlord" in result.output


def test_production_needs_yes_without_a_terminal(app_project, empty_db_url):
    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    refused = cli("seed", "--environment", "production", "--database-url", empty_db_url)
    assert refused.exit_code == 2 and "needs confirmation" in refused.stderr and "--yes" in refused.stderr
    accepted = cli("seed", "--environment", "production", "--yes", "--database-url", empty_db_url)
    assert accepted.exit_code == 0 and "ok      badges.sql" in accepted.stdout
    assert cli("rollback", "--env", "production", "--database-url", empty_db_url).exit_code == 2


def _on_terminal(args: list[str], answer: str, cwd: Path) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin and answer its prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pytest_overlord_db.cli", *args], cwd=cwd, stdin=follower,
                            stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "200"})
    os.close(follower)
    out = b""
    answered = False
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"[y/N]" in out:
            os.write(leader, answer.encode() + b"\n")
            answered = True
    os.close(leader)
    return proc.wait(timeout=60), out.decode(errors="replace")


def test_production_asks_on_a_terminal(app_project, empty_db_url):
    ini = app_project / "yoyo.ini"
    ini.write_text(ini.read_text().replace("batch_mode = on", "batch_mode = off"))
    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    # The server trusts local connections, so the password is never checked, only shown: masked.
    with_password = empty_db_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@", 1)
    assert with_password != empty_db_url
    code, out = _on_terminal(["seed", "--environment", "production", "--database-url", with_password], "n", app_project)
    assert code == 2 and "on PRODUCTION" in out and "Not confirmed" in out
    assert "s3cret-pw" not in out and "postgres:***@" in out
    code, out = _on_terminal(["seed", "--environment", "production", "--database-url", empty_db_url], "y", app_project)
    assert code == 0 and "badges.sql" in out


def test_new_creates_the_next_migration(app_project):
    result = cli("new", "-m", "Add badges table!")
    assert result.exit_code == 0
    created = app_project / "migrations" / "0006.add-badges-table.py"
    assert created.is_file() and "from yoyo import step" in created.read_text()
    from pytest_overlord_db.migrators import for_folder

    assert [m.id for m in for_folder(app_project / "migrations").chain()][-1] == "0006.add-badges-table"


def test_roundtrip_json_and_exit_codes(app_project, overlord_server):
    # This project declares its accepted exceptions in yoyo.ini instead of pyproject.toml.
    with open(app_project / "yoyo.ini", "a") as ini:
        ini.write("\n[overlord_db:accepted]\n0001.initial-schema extension citext = kept for other apps\n"
                  "0001.initial-schema extension vector = kept for other apps\n")
    result = cli("roundtrip", "--format", "json", "--database-url", overlord_server.admin_url)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) >= {"migrations", "ok"}
    assert [m["id"] for m in payload["migrations"]] == IDS
    for entry in payload["migrations"]:
        assert set(entry) >= {"id", "status", "diff"}
        assert entry["status"] in {"ok", "irreversible", "rollback_failed", "reapply_failed", "apply_failed", "no_rollback"}
    assert payload["ok"] is True

    broken = app_project / "broken"
    broken.mkdir()
    (broken / "0001.oops.py").write_text('from yoyo import step\nstep("CREATE TABLE a (id int); CREATE TABLE b (id int)", "DROP TABLE a")\n')
    result = cli("roundtrip", "--format", "json", "--migrations", str(broken), "--database-url", overlord_server.admin_url)
    assert result.exit_code == 1
    [entry] = json.loads(result.stdout)["migrations"]
    assert entry["status"] == "irreversible" and "left behind: table public.b" in entry["diff"]

    assert cli("roundtrip", "--format", "xml").exit_code == 2
    assert cli("roundtrip", "--migrations", str(app_project / "nope")).exit_code == 2


def test_ensure_migrations_sync_and_async(app_project, empty_db_url):
    import asyncio

    from pytest_overlord_db import MigrationError, ensure_migrations, ensure_migrations_async

    assert ensure_migrations(empty_db_url) == IDS
    assert asyncio.run(ensure_migrations_async(empty_db_url)) == []
    (app_project / "migrations" / "0006.fails.py").write_text('from yoyo import step\nstep("CREATE TABLE x (id int); SELECT 1/0", "DROP TABLE x")\n')
    before = snap(empty_db_url)
    with pytest.raises(MigrationError, match=r"0006.fails failed to apply: division by zero"):
        ensure_migrations(empty_db_url)
    assert not schema.compare(before, snap(empty_db_url))


def test_readme_documents_every_command_as_help_shows_it():
    readme = (REPO / "README.md").read_text()
    examples = re.findall(r"^overlord-db ([\w-]+)([^#\n]*)", readme, flags=re.M)
    documented = {name for name, _ in examples}
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert commands <= documented, commands - documented
    for name, rest in examples:
        if name not in commands:
            continue
        help_text = cli(name, "--help").stdout
        for flag in re.findall(r"(--[\w-]+)", rest):
            assert flag in help_text, f"README uses `overlord-db {name} {flag}`, which --help does not list"


def test_plain_yoyo_works_with_the_same_yoyo_ini(app_project, empty_db_url):
    yoyo = Path(sys.executable).with_name("yoyo")
    result = subprocess.run([str(yoyo), "apply", "--batch", "--database", empty_db_url], cwd=app_project,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    status = cli("status", "--database-url", empty_db_url)
    assert "Applied (5):" in status.stdout and "Pending (0):" in status.stdout
    assert "? ms" in status.stdout  # applied by plain yoyo: no duration was recorded, and we say so


def _lock_as_dead_process(url: str) -> int:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), %s)", (int(dead.stdout),))
    conn.close()
    return int(dead.stdout)


def test_a_lock_left_by_a_killed_run_is_named(app_project, empty_db_url, tmp_path):
    """On a server other machines may reach, a dead pid may be another machine's: name the lock, never break it."""
    from pytest_overlord_db import urls

    assert cli("migrate", "--target", "1", "--database-url", empty_db_url).exit_code == 0
    dead_pid = _lock_as_dead_process(empty_db_url)
    parts = urls.dsn_parts(empty_db_url)
    open_folder = tmp_path / "open"  # a socket folder others may enter: as good as a TCP port here
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    (open_folder / f".s.PGSQL.{parts['port']}").symlink_to(f"{parts['host']}/.s.PGSQL.{parts['port']}")
    shared = urls.with_database(f"postgresql://{parts['user']}@/?host={open_folder}&port={parts['port']}", str(parts["dbname"]))
    result = cli("migrate", "--database-url", shared)
    assert result.exit_code == 1
    assert f"locked by yoyo for process {dead_pid}" in result.stderr and "overlord-db break-lock" in result.stderr
    broken = cli("break-lock", "--database-url", shared)
    assert broken.exit_code == 0 and f"held by process {dead_pid}" in broken.stdout
    assert cli("break-lock", "--database-url", shared).stdout.strip().endswith("was not locked.")
    again = cli("migrate", "--database-url", shared)
    assert again.exit_code == 0, again.output


def test_a_lock_left_by_a_killed_run_on_a_private_server_is_removed(app_project, empty_db_url):
    """Only this machine reaches the embedded server: a dead pid's lock is certainly stale."""
    assert cli("migrate", "--target", "1", "--database-url", empty_db_url).exit_code == 0
    dead_pid = _lock_as_dead_process(empty_db_url)
    again = cli("migrate", "--database-url", empty_db_url)
    assert "removed yoyo's lock" in again.stderr and f"left by process {dead_pid}" in again.stderr
    again = cli("migrate", "--database-url", empty_db_url)
    assert again.exit_code == 0, again.output


def test_rollback_all_from_a_subfolder_and_seed_warns_of_pending_migrations(app_project, empty_db_url, monkeypatch):
    # Seeding a database that is not migrated: the files are written for the newest schema.
    seeded = cli("seed", "--environment", "development", "--database-url", empty_db_url)
    assert "Warning: 5 migration(s) are not applied (0001.initial-schema, 0002.add-queue-tables, " in seeded.stderr, seeded.output
    assert "Run `overlord-db migrate` first." in seeded.stderr
    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    assert "Warning" not in cli("seed", "--environment", "development", "--database-url", empty_db_url).stderr
    # From a folder inside the project, as pytest finds its rootdir: the project's yoyo.ini and migrations.
    inner = app_project / "app" / "repositories"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    both = cli("rollback", "0002", "--all", "--database-url", empty_db_url)
    assert both.exit_code == 2 and "Give a target (0002) or --all, not both." in both.stderr
    result = cli("rollback", "--all", "--database-url", empty_db_url)
    assert result.exit_code == 0, result.output
    assert "Rolled back 5 migration(s)" in result.stdout and "0001.initial-schema" in result.stdout
    assert tables(empty_db_url) <= {"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", "_overlord_migration_timing"}
    assert "Nothing to roll back." in cli("rollback", "--all", "--database-url", empty_db_url).stdout


def test_help_shows_flags_as_flags():
    text = cli("rollback", "--help").stdout
    assert "--all " in text and "--dry-run " in text
    assert "<bool>" not in text and "<bool>" not in cli("cache", "clear", "--help").stdout


def test_rows_a_migration_selects_are_not_printed(app_project, empty_db_url):
    (app_project / "migrations" / "0006.check.py").write_text(
        'from yoyo import step\nstep("SELECT \'canary-row-4711\' AS looked_at", "SELECT \'canary-row-4712\'")\n')
    for args in (("migrate",), ("rollback",)):
        result = cli(*args, "--database-url", empty_db_url)
        assert result.exit_code == 0, result.output
        assert "canary-row" not in result.stdout + result.stderr, result.output


def test_a_here_path_with_a_space_is_one_folder_and_a_missing_one_names_its_key(tmp_path, monkeypatch, empty_db_url):
    root = tmp_path / "my project"
    shutil.copytree(REPO / "migrations", root / "db migrations", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "yoyo.ini").write_text(f"[DEFAULT]\nsources = %(here)s/db migrations\ndatabase = {empty_db_url}\n")
    monkeypatch.chdir(root)
    result = cli("status")
    assert result.exit_code == 0 and f"Migrations: {root / 'db migrations'}" in result.stdout, result.output
    (root / "yoyo.ini").write_text(f"[DEFAULT]\nsources = %(here)s/elsewhere other\ndatabase = {empty_db_url}\n")
    result = cli("status")
    assert result.exit_code == 2, result.output
    assert f"Migrations folder {root / 'elsewhere'} does not exist (taken from {root / 'yoyo.ini'} [DEFAULT] sources)" in result.stderr

"""Every bad input gets one clear paragraph, not a traceback wall, and leaves nothing behind."""
from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow

USES_DB = "def test_it(overlord_db_sync):\n    pass\n"


def output(result) -> str:
    return result.stdout + result.stderr


def test_no_migrations_folder(project):
    shutil.rmtree(project.root / "migrations")
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "test_it.py")
    assert result.returncode == 4
    assert "Migrations folder" in output(result) and "does not exist" in output(result)
    assert "Traceback" not in output(result)


def test_migration_that_does_not_import(project):
    project.write("migrations/0006.broken.py", "from yoyo import step\n\nstep(\"SELECT 1\"\n")
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "test_it.py")
    text = output(result)
    assert result.returncode == 1, text
    assert "0006.broken.py:3" in text and "does not import" in text and "SyntaxError" in text
    assert "Traceback" not in text


def test_migration_that_raises_names_file_and_line(project):
    project.write("migrations/0006.raises.py", "from yoyo import step\nimport os\nVALUE = 1 / 0\n")
    project.write("test_it.py", USES_DB)
    text = output(project.run("-q", "test_it.py"))
    assert "0006.raises.py:3" in text and "ZeroDivisionError" in text


def test_migration_whose_sql_fails(project):
    project.write(
        "migrations/0006.bad-sql.py",
        'from yoyo import step\nstep("""\n    CREATE TABLE fine (id int);\n    CREATE TABLE broken (id int REFERENCES nowhere(id));\n""", "DROP TABLE broken; DROP TABLE fine")\n',
    )
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "test_it.py")
    text = output(result)
    assert result.returncode == 1, text
    assert "Migration 0006.bad-sql failed to apply" in text
    assert 'relation "nowhere" does not exist' in text
    assert "CREATE TABLE broken (id int REFERENCES nowhere(id));" in text
    assert "line 4" in text
    assert "Traceback" not in text
    # Nothing half-built is left looking like a template, and the server is stopped.
    assert project.server_processes() == []


def test_unknown_seed_lists_environments(project):
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "--seed=staging", "test_it.py")
    text = output(result)
    assert result.returncode == 4
    assert "Unknown seed environment 'staging'" in text and "development, production" in text


def test_unreachable_url_masks_the_password(project):
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "--overlord-db-url=postgresql://robot:s3cr3t-pw@127.0.0.1:1/nowhere", "test_it.py")
    text = output(result)
    assert result.returncode == 4, text
    assert "Cannot connect to PostgreSQL at postgresql://robot:***@127.0.0.1:1/nowhere" in text
    assert "s3cr3t-pw" not in text


def test_docker_backend_without_docker(project, tmp_path):
    project.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # whatever engine this machine has
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "--overlord-backend=docker", "test_it.py")
    text = output(result)
    assert result.returncode == 4
    assert "--overlord-backend=docker, but Docker does not answer (" in text and "--overlord-backend=embedded" in text


def test_unknown_backend(project):
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "--overlord-backend=oracle", "test_it.py")
    assert result.returncode == 4 and "is not one of auto, embedded, docker, url" in output(result)


def test_missing_extension_is_listed_before_anything_runs(project):
    # The embedded server has no pgcrypto (the seed's original 0001 asked for it).
    project.write("migrations/0006.crypto.py", 'from yoyo import step\nstep("CREATE EXTENSION IF NOT EXISTS \\"pgcrypto\\"", "DROP EXTENSION pgcrypto")\n')
    project.write("test_it.py", USES_DB)
    result = project.run("-q", "test_it.py")
    text = output(result)
    assert result.returncode == 4, text
    assert "cannot run these migrations: extension(s) not available: pgcrypto" in text
    # The remedy fits the backend in use (it once suggested the embedded backend to a user of it).
    assert "The embedded server (PostgreSQL 18." in text and "use --overlord-backend=docker" in text, text
    assert "PostgreSQL 13 and later have it built in" in text, text
    assert "Traceback" not in text


def test_the_missing_extension_remedy_fits_each_backend():
    from pytest_overlord_db.servers.base import _remedy

    assert "--overlord-image" in _remedy("docker", ["postgis"], "17.2") and "built in" not in _remedy("docker", ["postgis"], "17.2")
    assert "contrib package" in _remedy("url", ["pgcrypto"], "16.1") and "gen_random_uuid()" in _remedy("url", ["pgcrypto"], "16.1")


def test_a_round_trip_that_cannot_start_under_xdist_fails_each_item_with_the_error_of_one_try(project):
    import json

    project.write("migrations/0006.bad.py", 'from yoyo import step\nstep("CREATE TABLE x (id int REFERENCES nowhere(id))", "DROP TABLE x")\n')
    basetemp = project.root / "basetemp"
    result = project.run("-n", "2", "--overlord-roundtrip", "--basetemp", str(basetemp))
    text = output(result)
    assert result.returncode == 1, text
    assert "INTERNALERROR" not in text and "Traceback" not in text, text
    failures = text.split("short test summary info")[0]
    assert failures.count("overlord-db: Migration 0006.bad failed to apply") == 7, text  # 0001-0006 and the full cycle
    # The one worker that tried wrote the error down; the other items read it instead of trying again.
    (shared,) = basetemp.glob("overlord-roundtrip-*.json")
    assert json.loads(shared.read_text())["error"].startswith("Migration 0006.bad failed to apply"), shared.read_text()


def test_failing_migration_under_xdist_is_one_paragraph_per_test(project):
    project.write("migrations/0006.bad.py", 'from yoyo import step\nstep("CREATE TABLE x (id int REFERENCES nowhere(id))", "DROP TABLE x")\n')
    project.write("test_it.py", USES_DB + USES_DB.replace("test_it", "test_other"))
    result = project.run("-n", "2", "test_it.py")
    text = output(result)
    assert result.returncode == 1, text
    assert "INTERNALERROR" not in text and "Traceback" not in text and "During handling" not in text
    errors_section = text.split("short test summary info")[0]  # the summary may repeat it, as wide as the terminal
    assert errors_section.count("overlord-db: Migration 0006.bad failed to apply") == 2, text

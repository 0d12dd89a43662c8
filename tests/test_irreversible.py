"""Migrations declared irreversible on purpose: accepted in every report, stale-checked, and what they mean for
the walk after them (the full cycle stops above them; the CLI will not roll back past them)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pytest_overlord_db import roundtrip
from pytest_overlord_db.cli import app
from pytest_overlord_db.declarations import read_irreversible
from pytest_overlord_db.errors import ConfigError
from pytest_overlord_db.migrators import for_folder

BASE = 'from yoyo import step\nstep("CREATE TABLE a (id int, payload text)", "DROP TABLE a")\n'
# A data-destroying change with no way back: it has no rollback at all.
DROP_PAYLOAD = 'from yoyo import step\nstep("ALTER TABLE a DROP COLUMN payload")\n'
LATER = 'from yoyo import step\nstep("CREATE TABLE later (id int)", "DROP TABLE later")\n'
REASON = "payload is gone for good; restore from a backup instead"


def write(folder, second: str = DROP_PAYLOAD, third: str = LATER):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0001.base.py").write_text(BASE)
    (folder / "0002.drop-payload.py").write_text(second)
    (folder / "0003.later.py").write_text(third)
    return folder


def declared(*ids: str) -> list[dict[str, str]]:
    return [{"migration": m, "reason": REASON} for m in ids]


def test_declarations_from_pyproject_and_yoyo_ini(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        f'[[tool.overlord_db.irreversible]]\nmigration = "0002.drop-payload"\nreason = "{REASON}"\n')
    (tmp_path / "yoyo.ini").write_text("[overlord_db:irreversible]\n0007.squash = history rewritten\n")
    assert read_irreversible(tmp_path, tmp_path / "yoyo.ini") == (
        {"migration": "0007.squash", "reason": "history rewritten"},
        {"migration": "0002.drop-payload", "reason": REASON},
    )
    (tmp_path / "yoyo.ini").write_text("[overlord_db:irreversible]\n0002.drop-payload = twice\n")
    with pytest.raises(ConfigError, match="0002.drop-payload is declared irreversible twice"):
        read_irreversible(tmp_path, tmp_path / "yoyo.ini")
    (tmp_path / "pyproject.toml").write_text('[[tool.overlord_db.irreversible]]\nmigration = "0002.x"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml: every \[\[tool.overlord_db.irreversible\]\] entry needs "
                                          r"migration and reason; .* lacks reason"):
        read_irreversible(tmp_path)


def test_undeclared_it_fails_declared_it_passes_and_the_walk_goes_on(templates, tmp_path):
    folder = write(tmp_path / "migrations")
    plain = roundtrip.run(templates, for_folder(folder))
    assert [v.status for v in plain.migrations] == ["ok", "no_rollback", "ok"] and not plain.ok
    assert "[[tool.overlord_db.irreversible]]" in (plain.migrations[1].error or "")

    report = roundtrip.run(templates, for_folder(folder), irreversible=declared("0002.drop-payload"))
    assert [v.status for v in report.migrations] == ["ok", "declared_irreversible", "ok"], report.render()
    assert report.migrations[1].accepted == [{"object": "the whole migration is irreversible", "reason": REASON}]
    # The full cycle rolls back 0003 only, and says so.
    assert report.full_cycle is not None and report.full_cycle.ok, report.render()
    assert report.full_cycle.accepted[0] == {"object": "rolled back only down to 0002.drop-payload", "reason": REASON}
    assert report.ok and not report.stale_exceptions
    text = report.render()
    assert "declared_irreversible" in text and f"accepted: the whole migration is irreversible ({REASON})" in text
    assert json.loads(report.to_json())["migrations"][1]["status"] == "declared_irreversible"


@pytest.mark.parametrize("rollback", [None, "ALTER TABLE a ADD COLUMN payload text"], ids=["without rollback", "with one"])
def test_the_full_cycle_above_a_declared_one_runs_on_the_walks_own_database(templates, tmp_path, monkeypatch, rollback):
    """From the walk's top down to the declared migration, rows and all: no database migrated from empty for it."""
    made: list[str] = []
    create = templates.create_empty
    monkeypatch.setattr(templates, "create_empty", lambda kind: made.append(kind) or create(kind))
    second = DROP_PAYLOAD if rollback is None else f'from yoyo import step\nstep("ALTER TABLE a DROP COLUMN payload", "{rollback}")\n'
    folder = write(tmp_path / "migrations", second=second)
    (folder / "0004.more.py").write_text('from yoyo import step\nstep("CREATE TABLE more (id int)", "DROP TABLE more")\n')
    report = roundtrip.run(templates, for_folder(folder), irreversible=declared("0002.drop-payload"))
    assert report.ok and report.full_cycle is not None and report.full_cycle.ok, report.render()
    # The walk's first database, and (a declared migration with a rollback is tried on it) the one rebuilt after it.
    assert made.count("roundtrip") == (1 if rollback is None else 2), made


def test_a_broken_migration_after_the_declared_one_is_still_caught(templates, tmp_path):
    folder = write(tmp_path / "migrations", third='from yoyo import step\nstep("CREATE TABLE later (id int)", "SELECT 1")\n')
    report = roundtrip.run(templates, for_folder(folder), irreversible=declared("0002.drop-payload"))
    assert [v.status for v in report.migrations] == ["ok", "declared_irreversible", "irreversible"], report.render()
    assert report.full_cycle is not None and report.full_cycle.status == "irreversible"  # the walk down checks it too
    assert not report.ok


def test_a_declared_migration_whose_rollback_is_not_exact_is_accepted(templates, tmp_path):
    lossy = ('from yoyo import step\nstep("ALTER TABLE a DROP COLUMN payload", '
             '"ALTER TABLE a ADD COLUMN payload varchar(10)")\n')  # comes back, but not as it was
    report = roundtrip.run(templates, for_folder(write(tmp_path / "migrations", lossy)),
                           irreversible=declared("0002.drop-payload"))
    assert [v.status for v in report.migrations] == ["ok", "declared_irreversible", "ok"], report.render()
    assert report.ok and not report.stale_exceptions


def test_stale_declarations_are_reported(templates, tmp_path):
    # Declared irreversible, yet its rollback gives back schema and the generated rows exactly.
    exact = 'from yoyo import step\nstep("ALTER TABLE a ADD COLUMN note text", "ALTER TABLE a DROP COLUMN note")\n'
    report = roundtrip.run(templates, for_folder(write(tmp_path / "migrations", exact)),
                           irreversible=declared("0002.drop-payload", "0099.gone"))
    assert [(s["migration"], s["why"]) for s in report.stale_exceptions] == [
        ("0002.drop-payload", "its rollback restores everything exactly"), ("0099.gone", "no such migration")]
    assert not report.ok
    assert "stale exception: 0099.gone / (declared irreversible): no such migration" in report.render()


def test_the_cli_will_not_roll_back_past_a_declared_migration(tmp_path, monkeypatch, empty_db_url):
    root = tmp_path / "app"
    write(root / "migrations", 'from yoyo import step\nstep("ALTER TABLE a DROP COLUMN payload", "SELECT 1")\n')
    (root / "yoyo.ini").write_text(f"[DEFAULT]\nsources = %(here)s/migrations\n\n[overlord_db:irreversible]\n0002.drop-payload = {REASON}\n")
    monkeypatch.chdir(root)
    for var in ("DATABASE_URL", "OVERLORD_ENV", "OVERLORD_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["migrate", "--database-url", empty_db_url]).exit_code == 0
    refused = runner.invoke(app, ["rollback", "1", "--database-url", empty_db_url])
    assert refused.exit_code == 2, refused.output
    assert "0002.drop-payload is declared irreversible" in refused.stderr and "nothing was rolled back" in refused.stderr
    status = json.loads(runner.invoke(app, ["status", "--format", "json", "--database-url", empty_db_url]).stdout)
    assert status["pending"] == []
    # Down to it is allowed: only 0003 goes.
    fine = runner.invoke(app, ["rollback", "0002.drop-payload", "--database-url", empty_db_url])
    assert fine.exit_code == 0, fine.output
    status = json.loads(runner.invoke(app, ["status", "--format", "json", "--database-url", empty_db_url]).stdout)
    assert status["pending"] == ["0003.later"]

"""On GitHub Actions a failing round trip annotates the migration file and writes the job summary; pytest's round-trip
items carry their verdict in JUnit XML. Off GitHub nothing of this is written."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from pytest_overlord_db import github
from pytest_overlord_db.cli import app
from pytest_overlord_db.verdicts import FULL_CYCLE, Report

BROKEN = 'from yoyo import step\nstep("CREATE TABLE a (id int); CREATE TABLE b (id int)", "DROP TABLE a")\n'
REPO = Path(__file__).resolve().parent.parent
FINE = 'from yoyo import step\nstep("CREATE TABLE c (id int)", "DROP TABLE c")\n'


def test_error_lines_point_at_the_file_and_line_and_escape_the_message(tmp_path):
    rows = [github.Row("0001.fine", "ok", str(tmp_path / "m" / "0001.fine.py")),
            github.Row("0002.bad", "rollback_failed", str(tmp_path / "m" / "0002.bad.sql"), 0.5,
                       "Migration 0002.bad failed to roll back: 100% wrong.\n"
                       f"Failing statement (line 7 of {tmp_path / 'm' / '0002.bad.sql'}): DROP a, b")]
    [line] = github.error_lines(rows, {"GITHUB_WORKSPACE": str(tmp_path)})
    assert line.startswith("::error file=m/0002.bad.sql,line=7,title=overlord-db round trip%3A 0002.bad rollback_failed::")
    assert "100%25 wrong.%0AFailing statement" in line and "\n" not in line
    text = github.summary(rows, ok=False)
    assert "## overlord-db round trip: FAILED" in text and "| `0002.bad` | ❌ rollback_failed | 0.50 |" in text
    assert "| `0001.fine` | ✅ ok | 0.00 |" in text and "<details><summary><code>0002.bad</code>" in text


def test_nothing_is_written_off_github(tmp_path):
    lines: list[str] = []
    rows = [github.Row("0002.bad", "irreversible", "x.py", 0.1, "+ left behind: table public.b")]
    github.publish(rows, False, lines.append, {"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")})
    assert lines == [] and not (tmp_path / "s.md").exists()
    github.publish(rows, False, lines.append, {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")})
    assert len(lines) == 1 and "irreversible" in (tmp_path / "s.md").read_text()


def test_the_cli_annotates_a_failing_round_trip(tmp_path, overlord_server, monkeypatch):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001.fine.py").write_text(FINE)
    (folder / "0002.oops.py").write_text(BROKEN)
    summary = tmp_path / "summary.md"
    monkeypatch.chdir(tmp_path)
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(tmp_path)}
    result = CliRunner().invoke(app, ["roundtrip", "--migrations", str(folder), "--database-url", overlord_server.admin_url],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    # 0002.oops and the full cycle: both at the statement that failed to re-apply, in 0002.oops.py.
    assert len(errors) == 2, result.stdout
    assert errors[0].startswith("::error file=migrations/0002.oops.py,line=2,title=overlord-db round trip%3A 0002.oops irreversible::")
    assert errors[1].startswith("::error file=migrations/0002.oops.py,line=2,title=overlord-db round trip%3A (all migrations) ")
    assert all("left behind: table public.b" in line for line in errors)
    text = summary.read_text()
    assert "overlord-db round trip: FAILED" in text and "| `0002.oops` | ❌ irreversible" in text


def test_pytest_items_carry_the_verdict_in_junit_xml_and_annotate_under_xdist(project):
    project.write("migrations/0006.oops.py", BROKEN)
    project.write("pyproject.toml", (REPO / "pyproject.toml").read_text())  # the accepted extensions of 0001
    summary = project.root / "summary.md"
    project.env.update({"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(project.root)})
    basetemp = project.root / "basetemp"
    result = project.result("-n", "2", "-v", "--basetemp", str(basetemp), "--overlord-roundtrip", "--junitxml", "junit.xml",
                            "-p", "no:cacheprovider")
    text = "\n".join(result.outlines)
    assert result.ret == 1, text
    cases = {case.get("name"): case for case in ET.parse(project.root / "junit.xml").getroot().iter("testcase")}
    def props(name: str) -> dict[str, str]:
        return {p.get("name"): p.get("value") for p in cases[name].iter("property")}
    # Both workers ran round-trip items, and every item carries the timings of the one round trip a worker ran and
    # left in the run's folder: the others read it instead of walking the chain again.
    assert {line.split()[0] for line in result.outlines if line.startswith("[gw") and "roundtrip[" in line} == {"[gw0]", "[gw1]"}, text
    (path,) = basetemp.glob("overlord-roundtrip-*.json")  # named with a token of the run
    shared = Report.from_json(path.read_text())
    assert len(shared.migrations) == 6
    for verdict in shared.migrations + shared.whole:
        name = "roundtrip[all-down-and-up]" if verdict.id == FULL_CYCLE else f"roundtrip[{verdict.id}]"
        assert props(name)["overlord_roundtrip_seconds"] == f"{verdict.seconds:.3f}", (name, text)
    assert props("roundtrip[0006.oops]")["overlord_roundtrip_status"] == "irreversible"
    assert props("roundtrip[0006.oops]")["overlord_roundtrip_file"].endswith("migrations/0006.oops.py")
    assert props("roundtrip[0002.add-queue-tables]")["overlord_roundtrip_status"] == "ok"
    errors = [line for line in result.outlines if line.startswith("::error ")]
    assert errors and all(line.startswith("::error file=migrations/0006.oops.py,line=2,") for line in errors), text
    assert not any("[gw" in line for line in errors), text
    assert "| `0006.oops` | ❌ irreversible" in summary.read_text()


def test_a_seeded_round_trip_is_an_item_of_its_own_and_names_the_lost_rows(project):
    # Only the seed data has this topic, so only the walk with the seed data loaded can see the rollback lose it.
    project.write("migrations/0006.retitle.py", 'from yoyo import step\nstep(\n    "UPDATE topics SET title = \'Renamed\' '
                  "WHERE id = '00000000-0000-4000-9000-000000000001'\",\n    \"SELECT 1\",\n)\n")
    project.write("pyproject.toml", (REPO / "pyproject.toml").read_text())  # the accepted extensions of 0001
    result = project.result("--overlord-roundtrip", "--seed=development", "-k", "roundtrip", "-p", "no:cacheprovider")
    text = "\n".join(result.outlines)
    result.assert_outcomes(passed=7, failed=2)  # 0001-0005, the full cycle, the declarations; 0006 and the seeded walk fail
    assert "FAILED ::roundtrip[0006.retitle] - 0006.retitle: irreversible" in text, text
    assert "FAILED ::roundtrip[seed-data-development] - (with seed data): irreversible" in text, text
    assert "title 'Is compliance a virtue?' → 'Renamed'" in text, text

"""Data-aware round trips: every table gets generated rows before each migration, and the rollback must give back
exactly the rows that were there, named by table, row key and column when it does not."""
from __future__ import annotations

import re

import psycopg2
import pytest

from pytest_overlord_db import datagen, roundtrip
from pytest_overlord_db.migrators import for_folder

BASE = '''from yoyo import step
step("CREATE TABLE a (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'x', score numeric(10,2) NOT NULL)",
     "DROP TABLE a")
'''


def step(apply: str, rollback: str) -> str:
    return f'from yoyo import step\nstep("""{apply}""", """{rollback}""")\n'


# case -> (second migration, expected status, a regex the diff must match)
BROKEN = {
    "rounds": (step("ALTER TABLE a ALTER COLUMN score TYPE numeric(10,0)", "ALTER TABLE a ALTER COLUMN score TYPE numeric(10,2)"),
               "irreversible", r"public\.a id=\d+: score -?\d+\.\d\d → -?\d+\.00"),
    "truncates": (step("ALTER TABLE a ALTER COLUMN name TYPE varchar(1) USING left(name, 1)", "ALTER TABLE a ALTER COLUMN name TYPE text"),
                  "irreversible", r"public\.a id=\d+: name '.*' → '.?'"),
    "deletes": (step("DELETE FROM a WHERE id = (SELECT min(id) FROM a)", "SELECT 1"), "irreversible", r"public\.a id=\d+: gone \(was name "),
    "re-splits": (step("ALTER TABLE a ADD COLUMN rest text; UPDATE a SET rest = substr(name, 2), name = left(name, 1)",
                       "UPDATE a SET name = name || '-' || rest; ALTER TABLE a DROP COLUMN rest"),
                  "irreversible", r"public\.a id=\d+: name '.*' → '.*-.*'"),
    "drops_a_column": (step("ALTER TABLE a DROP COLUMN score", "ALTER TABLE a ADD COLUMN score numeric(10,2); UPDATE a SET score = 0; ALTER TABLE a ALTER COLUMN score SET NOT NULL"),
                       "irreversible", r"public\.a id=\d+: score -?\d+\.\d\d → 0\.00"),
    "fails_on_data": (step("ALTER TABLE a ADD COLUMN must text NOT NULL", "ALTER TABLE a DROP COLUMN must"),
                      "apply_failed", r'column "must" of relation "a" contains null values'),
}
CORRECT = {
    "widens": step("ALTER TABLE a ALTER COLUMN score TYPE numeric(12,2)", "ALTER TABLE a ALTER COLUMN score TYPE numeric(10,2)"),
    "adds_a_derived_column": step("ALTER TABLE a ADD COLUMN initial text; UPDATE a SET initial = left(name, 1)",
                                  "ALTER TABLE a DROP COLUMN initial"),
    "moves_rows_and_back": step("CREATE TABLE archive AS SELECT * FROM a; DELETE FROM a",
                                "INSERT INTO a SELECT * FROM archive; DROP TABLE archive"),
}


def write(folder, second):
    folder.mkdir(parents=True)
    (folder / "0001.base.py").write_text(BASE)
    (folder / "0002.change.py").write_text(second)
    return folder


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_rollback_that_changes_data_is_flagged_by_row(case, templates, tmp_path):
    second, status, pattern = BROKEN[case]
    report = roundtrip.run(templates, for_folder(write(tmp_path / "migrations", second)), rows=4)
    base, change = report.migrations
    assert base.status == "ok", report.render()
    assert change.status == status, report.render()
    assert re.search(pattern, change.diff + (change.error or "")), report.render()
    assert not report.ok


@pytest.mark.parametrize("case", sorted(CORRECT))
def test_a_rollback_that_restores_data_passes(case, templates, tmp_path):
    report = roundtrip.run(templates, for_folder(write(tmp_path / "migrations", CORRECT[case])), rows=4)
    assert [v.status for v in report.migrations] == ["ok", "ok"], report.render()
    assert report.ok, report.render()


def test_without_generated_rows_the_data_defects_go_unseen(templates, tmp_path):
    # The reason for generating rows: on empty tables these rollbacks look exact.
    for case in ("rounds", "truncates", "drops_a_column"):
        report = roundtrip.run(templates, for_folder(write(tmp_path / case, BROKEN[case][0])), rows=0)
        assert report.ok, report.render()


def test_a_lost_column_can_be_accepted_explicitly(templates, tmp_path):
    folder = write(tmp_path / "migrations", BROKEN["drops_a_column"][0])
    accepted = [{"migration": "0002.change", "object": "data public.a", "reason": "scores are recomputed nightly"}]
    report = roundtrip.run(templates, for_folder(folder), accepted, rows=4)
    assert report.ok, report.render()
    assert report.migrations[1].accepted == [{"object": "data public.a", "reason": "scores are recomputed nightly"}]


def test_when_every_migration_passes_the_full_cycle_runs_on_the_walks_own_database(templates, tmp_path, monkeypatch):
    """From the top of the walk, rows and all: no new database applied to from the bottom first."""
    made: list[str] = []
    create = templates.create_empty
    monkeypatch.setattr(templates, "create_empty", lambda kind: made.append(kind) or create(kind))
    folder = write(tmp_path / "migrations", step("CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a(id))", "DROP TABLE b"))
    report = roundtrip.run(templates, for_folder(folder))
    assert report.ok and report.full_cycle is not None and report.full_cycle.ok, report.render()
    assert made.count("roundtrip") == 1, made  # the walk's; the full cycle had a second one


def test_a_table_emptied_and_filled_again_during_the_walk_does_not_fail_the_full_cycle(templates, tmp_path):
    """0002 moves k's rows to b and empties k; the walk fills k again before 0003, with the same rows (keys
    included). Rolled back from the top, 0002 would put back keys k already holds: the cycle without rows
    decides, as it always did."""
    folder = write(tmp_path / "migrations", step("CREATE TABLE b (id int PRIMARY KEY, name text); INSERT INTO b SELECT * FROM k; "
                                                 "TRUNCATE k", "INSERT INTO k SELECT * FROM b; DROP TABLE b"))
    (folder / "0001a.keyed.py").write_text(step("CREATE TABLE k (id int PRIMARY KEY, name text)", "DROP TABLE k"))
    (folder / "0003.more.py").write_text(step("CREATE TABLE c (id int)", "DROP TABLE c"))
    report = roundtrip.run(templates, for_folder(folder))
    assert [v.status for v in report.migrations] == ["ok"] * 4, report.render()
    assert report.full_cycle is not None and report.full_cycle.ok, report.render()


def test_the_full_cycle_on_the_walks_database_gives_back_the_rows_at_its_bottom(templates, tmp_path):
    """Rolled back from the top, every row the walk had at the bottom must be there again."""
    from pytest_overlord_db import fullcycle
    from pytest_overlord_db.walker import Walker

    folder = write(tmp_path / "migrations", step("CREATE TABLE b (id int)", "DROP TABLE b; DELETE FROM a WHERE id = 2"))
    migrator = for_folder(folder)
    chain = migrator.chain()
    walker = Walker(templates, migrator)
    try:
        walker.fresh(chain[:1])
        conn = walker.connection()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO a (name, score) SELECT 'n' || g, g FROM generate_series(1, 3) g")
        conn.commit()
        bottom = walker.snapshot()
        migrator.apply(walker.url, chain[1:], lock=False, quiet=True)
        verdict = fullcycle.down_and_up(walker, chain[1:], bottom, walker.snapshot(), [], set())
    finally:
        walker.end()
    assert verdict.status == "irreversible", verdict
    assert re.search(r"public\.a id=2: gone", verdict.diff), verdict.diff


def test_a_table_without_generated_rows_is_named_with_the_reason(templates, tmp_path):
    folder = write(tmp_path / "migrations", step(
        "CREATE TABLE odd (id int PRIMARY KEY, spot point NOT NULL); "
        "CREATE TABLE picky (id int PRIMARY KEY, n int NOT NULL, m int NOT NULL, CHECK (n * 7 = m + 1000003))",
        "DROP TABLE odd; DROP TABLE picky"))
    (folder / "0003.later.py").write_text(step("CREATE TABLE later (id int)", "DROP TABLE later"))
    report = roundtrip.run(templates, for_folder(folder), rows=3)
    gaps = {g["table"]: g for g in report.data_gaps}
    assert set(gaps) == {"public.odd", "public.picky"}, report.render()
    assert "column spot is of type point" in gaps["public.odd"]["why"] and gaps["public.odd"]["migration"] == "0003.later"
    assert "violates check constraint" in gaps["public.picky"]["why"]
    assert "no generated rows: public.odd (from 0003.later on)" in report.render()
    assert report.ok  # a gap is said, not failed


def test_the_rows_are_the_same_for_the_same_seed_and_honour_the_catalog(overlord_fresh_db):
    conn = psycopg2.connect(overlord_fresh_db.url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TYPE mood AS ENUM ('calm', 'busy'); CREATE DOMAIN short AS varchar(4) CHECK (VALUE <> '');"
                        "CREATE TABLE p (id uuid PRIMARY KEY, m mood NOT NULL, tags text[], doc jsonb, v vector(3) NOT NULL,"
                        " r int4range, s short, n numeric(5,2) NOT NULL CHECK (n >= 0), k int NOT NULL CHECK (k BETWEEN 1 AND 9),"
                        " kind text NOT NULL CHECK (kind IN ('a', 'b')));"
                        "CREATE TABLE c (id int GENERATED ALWAYS AS IDENTITY, p uuid NOT NULL REFERENCES p(id), twice int"
                        " GENERATED ALWAYS AS (k2 * 2) STORED, k2 int)")
        conn.commit()
        drawn = []
        for _ in range(2):
            tables = datagen.read_tables(conn)
            assert [t.name for t in tables if t.name in ("public.p", "public.c")] == ["public.p", "public.c"]  # parent first
            gaps: list[tuple[str, str]] = []
            filled = datagen.fill(conn, tables, 5, data_seed=42, report=lambda t, w, found=gaps: found.append((t, w)))
            assert (filled["public.p"], filled["public.c"]) == (5, 5), gaps
            with conn.cursor() as cur:
                cur.execute("SELECT m, tags, doc, v::text, r, s, n, k, kind FROM p ORDER BY id")
                drawn.append(cur.fetchall())
                cur.execute("SELECT count(*), count(DISTINCT p) FILTER (WHERE p IS NOT NULL) FROM c")
                assert cur.fetchone()[0] == 5
                cur.execute("TRUNCATE c, p")
            conn.commit()
        assert drawn[0] == drawn[1] and len(drawn[0]) == 5
        assert all(row[8] in ("a", "b") and 0 <= row[6] <= 999.99 and 1 <= row[7] <= 9 for row in drawn[0])
    finally:
        conn.close()


# Seed data fits the newest schema, so its walk goes down from the top (seedwalk). The change touches only a
# row the seed file holds: generated rows never have that name, so only the seeded walk can see it.
SEEDED_CHANGE = {
    "broken": step("UPDATE a SET score = 7.00 WHERE name = 'pen'", "SELECT 1"),
    "correct": step("UPDATE a SET score = 7.00 WHERE name = 'pen'", "UPDATE a SET score = 7.50 WHERE name = 'pen'"),
}


def seeds(folder, text):
    path = folder / "dev" / "01.sql"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return [path]


@pytest.mark.parametrize("case", sorted(SEEDED_CHANGE))
def test_the_seed_rows_must_come_back(case, templates, tmp_path):
    files = seeds(tmp_path / "seeds", "INSERT INTO a (id, name, score) VALUES (1001, 'pen', 7.50);")
    report = roundtrip.run(templates, for_folder(write(tmp_path / "migrations", SEEDED_CHANGE[case])), rows=2,
                           seed_files=files, seed_env="dev")
    base, change = report.migrations
    assert base.status == "ok", report.render()
    assert report.seeded is not None
    if case == "correct":
        assert (change.status, report.seeded.status, report.ok) == ("ok", "ok", True), report.render()
        assert report.seeded.accepted[0]["object"] == "checked down to 0001.base", report.render()
    else:
        assert (change.status, report.seeded.status, report.ok) == ("irreversible", "irreversible", False), report.render()
        assert "With the seed data of dev:" in change.diff, report.render()
        assert "public.a id=1001: score 7.50 → 7.00" in change.diff, report.render()
        assert "0002.change" in (report.seeded.error or ""), report.render()


def test_seed_files_that_do_not_load_fail_the_walk_with_their_paragraph(templates, tmp_path):
    files = seeds(tmp_path / "seeds", "INSERT INTO nowhere VALUES (1);")
    report = roundtrip.run(templates, for_folder(write(tmp_path / "migrations", SEEDED_CHANGE["correct"])), rows=0,
                           seed_files=files, seed_env="dev")
    assert [v.status for v in report.migrations] == ["ok", "ok"], report.render()
    assert report.seeded is not None and report.seeded.status == "apply_failed", report.render()
    assert "01.sql:1 failed: relation \"nowhere\" does not exist" in (report.seeded.error or ""), report.render()
    assert not report.ok


def test_the_draws_do_not_depend_on_which_modules_are_imported(tmp_path, monkeypatch):
    # Hypothesis mixes in constants from the source of "local" modules; a user's project imports its own.
    from hypothesis import strategies as st

    strategy = st.lists(st.tuples(st.text(max_size=8), st.integers(), st.floats(allow_nan=False)), min_size=300, max_size=300)
    before = datagen._draw(strategy, 1234)
    folder = tmp_path / "appcode"  # not a test folder: Hypothesis reads only non-test local modules
    folder.mkdir()
    constants = ", ".join(f"'const{i}', {1000003 + i}, {i}.5" for i in range(100))  # Hypothesis reads up to 1024
    (folder / "overlord_constants_module.py").write_text(f"VALUES = ({constants})\n")
    monkeypatch.syspath_prepend(str(folder))
    __import__("overlord_constants_module")
    assert datagen._draw(strategy, 1234) == before

"""The round-trip verifier against a corpus of small migration folders, correct and broken.

Each case is a folder of yoyo migrations written here; the expected status of
every migration is given beside it. Broken cases must be flagged at the right
migration with the right status, and correct ones never.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pytest_overlord_db import roundtrip, schema
from pytest_overlord_db.migrators import for_folder
from pytest_overlord_db.migrators.yoyo import YoyoMigrator

BASE = '''from yoyo import step
step("""
    CREATE TABLE a (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'x', score numeric(10,2));
    CREATE TYPE mood AS ENUM ('calm', 'busy');
    CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
""", """
    DROP FUNCTION touch();
    DROP TYPE mood;
    DROP TABLE a;
""")
'''


def step(apply: str, rollback: str | None) -> str:
    if rollback is None:
        return f'from yoyo import step\nstep("""{apply}""")\n'
    return f'from yoyo import step\nstep("""{apply}""", """{rollback}""")\n'


# case name -> (second migration, expected status of it, text the diff or error must contain[, (apply, rollback)
# of a migration between the base and it])
BROKEN = {
    "left_table": (step("CREATE TABLE b (id int); CREATE TABLE c (id int)", "DROP TABLE c"), "irreversible", "+ left behind: table public.b"),
    "left_column": (step("ALTER TABLE a ADD COLUMN extra int", "SELECT 1"), "irreversible", "left behind: column public.a.extra"),
    "left_index": (step("CREATE INDEX idx_a_name ON a (name)", "SELECT 1"), "irreversible", "left behind: index public.idx_a_name"),
    "partial_index_predicate": (
        step("DROP INDEX IF EXISTS nothing; CREATE INDEX idx_a_score ON a (score) WHERE score > 0",
             "DROP INDEX idx_a_score; CREATE INDEX idx_a_score ON a (score) WHERE score > 1"),
        "irreversible", "left behind: index public.idx_a_score"),
    "left_constraint": (step("ALTER TABLE a ADD CONSTRAINT a_score_positive CHECK (score > 0)", "SELECT 1"), "irreversible", "constraint public.a.a_score_positive"),
    "unique_constraint": (step("ALTER TABLE a ADD CONSTRAINT a_name_key UNIQUE (name)", "ALTER TABLE a DROP CONSTRAINT a_name_key; CREATE INDEX a_name_key ON a(name)"), "irreversible", "index public.a_name_key"),
    "default_changed": (step("ALTER TABLE a ALTER COLUMN name SET DEFAULT 'y'", "ALTER TABLE a ALTER COLUMN name SET DEFAULT 'z'"), "irreversible", "-default 'x'::text"),
    "not_null_dropped": (step("ALTER TABLE a ALTER COLUMN name DROP NOT NULL", "SELECT 1"), "irreversible", "column public.a.name"),
    "type_changed": (step("ALTER TABLE a ALTER COLUMN score TYPE bigint", "ALTER TABLE a ALTER COLUMN score TYPE numeric"), "irreversible", "-type numeric(10,2)"),
    "sequence_changed": (step("ALTER SEQUENCE a_id_seq INCREMENT BY 5", "ALTER SEQUENCE a_id_seq INCREMENT BY 2"), "irreversible", "sequence public.a_id_seq"),
    "left_sequence": (step("CREATE SEQUENCE tickets START 100", "SELECT 1"), "irreversible", "left behind: sequence public.tickets"),
    "enum_label_added": (step("ALTER TYPE mood ADD VALUE 'angry'", "SELECT 1"), "irreversible", "enum public.mood"),
    "function_body": (
        step("CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := 'v2'; RETURN NEW; END $$",
             "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"),
        "irreversible", "function public.touch()"),
    "left_trigger": (step("CREATE TRIGGER a_touch BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION touch()", "SELECT 1"), "irreversible", "trigger public.a.a_touch"),
    "left_view": (step("CREATE VIEW a_names AS SELECT name FROM a", "SELECT 1"), "irreversible", "left behind: view public.a_names"),
    "view_definition": (step("CREATE VIEW v AS SELECT id FROM a", "DROP VIEW v; CREATE VIEW v AS SELECT name FROM a"), "irreversible", "left behind: view public.v"),
    "left_extension": (step("CREATE EXTENSION IF NOT EXISTS pg_trgm", "SELECT 1"), "irreversible", "left behind: extension pg_trgm"),
    "left_policy": (
        step("ALTER TABLE a ENABLE ROW LEVEL SECURITY; CREATE POLICY a_own ON a USING (name = current_user)", "ALTER TABLE a DISABLE ROW LEVEL SECURITY"),
        "irreversible", "policy public.a.a_own"),
    "rls_flag": (step("ALTER TABLE a ENABLE ROW LEVEL SECURITY", "SELECT 1"), "irreversible", "+row level security enabled"),
    "left_comment": (step("COMMENT ON TABLE a IS 'the a table'", "SELECT 1"), "irreversible", "+comment the a table"),
    "left_privilege": (step("GRANT SELECT ON a TO PUBLIC", "SELECT 1"), "irreversible", "table public.a"),
    "left_rows": (step("INSERT INTO a (name) VALUES ('seeded')", "SELECT 1"), "irreversible", "data public.a"),
    "changed_rows": (step("INSERT INTO a (name) VALUES ('one')", "UPDATE a SET name = 'two'"), "irreversible", "data public.a"),
    "left_exclusion": (
        step("CREATE EXTENSION IF NOT EXISTS btree_gist; CREATE TABLE slots (room int, during tstzrange, EXCLUDE USING gist (room WITH =, during WITH &&))",
             "DROP TABLE slots"),
        "irreversible", "left behind: extension btree_gist"),
    "exclusion_changed": (
        step("CREATE TABLE slots (room int, during tstzrange, CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&))",
             "ALTER TABLE slots DROP CONSTRAINT no_overlap; ALTER TABLE slots ADD CONSTRAINT no_overlap EXCLUDE USING gist (during WITH =)"),
        "irreversible", "left behind: table public.slots"),
    "left_composite": (step("CREATE TYPE pair AS (a int, b text)", "SELECT 1"), "irreversible", "left behind: type public.pair"),
    "left_procedure": (step("CREATE PROCEDURE bump() LANGUAGE sql AS $$ UPDATE a SET score = score + 1 $$", "SELECT 1"), "irreversible", "left behind: procedure public.bump()"),
    "function_volatility": (
        step("CREATE FUNCTION f() RETURNS int LANGUAGE sql STABLE AS $$ SELECT 1 $$",
             "DROP FUNCTION f(); CREATE FUNCTION f() RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT 1 $$"),
        "irreversible", "left behind: function public.f()"),
    "column_comment": (step("COMMENT ON COLUMN a.name IS 'display name'", "SELECT 1"), "irreversible", "+comment display name"),
    "column_privilege": (step("GRANT SELECT (name) ON a TO PUBLIC", "SELECT 1"), "irreversible", "column public.a.name"),
    "left_matview": (step("CREATE MATERIALIZED VIEW a_count AS SELECT count(*) FROM a", "SELECT 1"), "irreversible", "left behind: materialized view public.a_count"),
    "collation_changed": (step('ALTER TABLE a ALTER COLUMN name TYPE text COLLATE "C" ', "SELECT 1"), "irreversible", '+collate C'),
    "generated_expression": (
        step("ALTER TABLE a ADD COLUMN doubled numeric GENERATED ALWAYS AS (score * 2) STORED",
             "ALTER TABLE a DROP COLUMN doubled; ALTER TABLE a ADD COLUMN doubled numeric GENERATED ALWAYS AS (score * 3) STORED"),
        "irreversible", "column public.a.doubled"),
    "sequence_ownership": (step("ALTER SEQUENCE a_id_seq OWNED BY NONE", "SELECT 1"), "irreversible", "-owned by a.id"),
    "trigger_disabled": (
        step("CREATE TRIGGER a_touch BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION touch(); ALTER TABLE a DISABLE TRIGGER a_touch",
             "SELECT 1"),
        "irreversible", "trigger public.a.a_touch"),
    "left_domain": (step("CREATE DOMAIN positive AS int CHECK (VALUE > 0)", "SELECT 1"), "irreversible", "domain public.positive"),
    "left_schema": (step("CREATE SCHEMA reporting", "SELECT 1"), "irreversible", "left behind: schema reporting"),
    "identity_added": (step("ALTER TABLE a ADD COLUMN n int GENERATED ALWAYS AS IDENTITY", "ALTER TABLE a DROP COLUMN n; ALTER TABLE a ADD COLUMN n int"), "irreversible", "column public.a.n"),
    # properties a schema dump shows beyond the objects themselves (tests/test_pgdump_oracle.py covers every kind)
    "storage_parameter": (step("ALTER TABLE a SET (fillfactor = 70)", "SELECT 1"), "irreversible", "+options fillfactor=70"),
    "replica_identity": (step("ALTER TABLE a REPLICA IDENTITY FULL", "SELECT 1"), "irreversible", "+replica identity f"),
    "inheritance": (step("CREATE TABLE b (id int); CREATE TABLE c () INHERITS (b)", "ALTER TABLE c NO INHERIT b; DROP TABLE b"),
                    "irreversible", "left behind: table public.c"),
    "column_storage": (step("ALTER TABLE a ALTER COLUMN name SET STORAGE EXTERNAL", "SELECT 1"), "irreversible", "+storage e"),
    "column_statistics": (step("ALTER TABLE a ALTER COLUMN name SET STATISTICS 500", "SELECT 1"), "irreversible", "+statistics 500"),
    "column_compression": (step("ALTER TABLE a ALTER COLUMN name SET COMPRESSION pglz", "SELECT 1"), "irreversible", "+compression p"),
    "left_rule": (step("CREATE RULE a_log AS ON INSERT TO a DO ALSO NOTIFY a", "SELECT 1"), "irreversible", "left behind: rule public.a.a_log"),
    "left_event_trigger": (
        step("CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$; "
             "CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION on_ddl()", "ALTER EVENT TRIGGER watch DISABLE"),
        "irreversible", "left behind: event trigger watch"),
    "left_publication": (step("CREATE PUBLICATION feed FOR TABLE a", "SELECT 1"), "irreversible", "left behind: publication feed"),
    "default_privileges": (step("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "SELECT 1"), "irreversible", "default privileges of"),
    "text_search_mapping": (
        step("CREATE TEXT SEARCH CONFIGURATION words (COPY = simple); ALTER TEXT SEARCH CONFIGURATION words DROP MAPPING FOR email",
             "DROP TEXT SEARCH CONFIGURATION words; CREATE TEXT SEARCH CONFIGURATION words (COPY = simple)"),
        "irreversible", "left behind: text search configuration public.words"),
    "extended_statistics": (step("CREATE STATISTICS a_stats (ndistinct) ON name, score FROM a", "SELECT 1"), "irreversible", "left behind: statistics public.a_stats"),
    "database_setting": (
        step("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '8MB'); END $$", "SELECT 1"),
        "irreversible", "+settings for everyone: work_mem=8MB"),
    # these change an object an earlier migration made (the fourth item: that migration's apply and rollback)
    "view_security_invoker": (
        step("ALTER VIEW v SET (security_invoker = true)", "SELECT 1"),
        "irreversible", "+options security_invoker=true", ("CREATE VIEW v AS SELECT id FROM a", "DROP VIEW v")),
    "aggregate_initcond": (
        step("CREATE OR REPLACE AGGREGATE total(int) (sfunc = int4pl, stype = int, initcond = '1')",
             "CREATE OR REPLACE AGGREGATE total(int) (sfunc = int4pl, stype = int, initcond = '2')"),
        "irreversible", "initcond '0'", ("CREATE AGGREGATE total(int) (sfunc = int4pl, stype = int, initcond = '0')", "DROP AGGREGATE total(int)")),
    "text_search_dictionary": (
        step("ALTER TEXT SEARCH DICTIONARY plain (ACCEPT = false)", "SELECT 1"), "irreversible", "text search dictionary public.plain",
        ("CREATE TEXT SEARCH DICTIONARY plain (TEMPLATE = simple)", "DROP TEXT SEARCH DICTIONARY plain")),
    "publication_tables": (
        step("ALTER PUBLICATION feed ADD TABLE a", "SELECT 1"), "irreversible", "+tables a",
        ("CREATE PUBLICATION feed", "DROP PUBLICATION feed")),
    "policy_comment": (
        step("COMMENT ON POLICY mine ON a IS 'own rows'", "SELECT 1"), "irreversible", "+comment own rows",
        ("CREATE POLICY mine ON a USING (true)", "DROP POLICY mine ON a")),
    "index_statistics": (
        step("ALTER INDEX a_lower ALTER COLUMN 1 SET STATISTICS 300", "SELECT 1"), "irreversible", "+statistics 1 300",
        ("CREATE INDEX a_lower ON a (lower(name))", "DROP INDEX a_lower")),
    "rollback_errors": (step("CREATE TABLE b (id int)", "DROP TABLE does_not_exist"), "rollback_failed", 'table "does_not_exist" does not exist'),
    "missing_rollback": (step("CREATE TABLE b (id int)", None), "no_rollback", "has no rollback"),
    "apply_fails": (step("CREATE TABLE b (id int REFERENCES nowhere(id))", "DROP TABLE b"), "apply_failed", 'relation "nowhere" does not exist'),
    "reapply_fails": (step("CREATE ROLE {role}", "SELECT 1"), "reapply_failed", "already exists"),
}

CORRECT = {
    "everything_undone": step(
        """
        CREATE SCHEMA reporting;
        CREATE TABLE reporting.b (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a_id int REFERENCES a(id),
                                  total int GENERATED ALWAYS AS (a_id * 2) STORED, label text COLLATE "C");
        CREATE INDEX b_label ON reporting.b (label) WHERE label IS NOT NULL;
        ALTER TABLE a ADD COLUMN extra int DEFAULT 0;
        ALTER TYPE mood RENAME VALUE 'busy' TO 'hectic';
        CREATE VIEW reporting.v AS SELECT id FROM a;
        CREATE MATERIALIZED VIEW reporting.mv AS SELECT count(*) AS n FROM a;
        CREATE TRIGGER a_touch BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION touch();
        ALTER TABLE a ENABLE ROW LEVEL SECURITY;
        CREATE POLICY a_all ON a USING (true);
        COMMENT ON TABLE a IS 'commented';
        GRANT SELECT ON a TO PUBLIC;
        INSERT INTO a (name) VALUES ('row');
        """,
        """
        DELETE FROM a WHERE name = 'row';
        REVOKE SELECT ON a FROM PUBLIC;
        COMMENT ON TABLE a IS NULL;
        DROP POLICY a_all ON a;
        ALTER TABLE a DISABLE ROW LEVEL SECURITY;
        DROP TRIGGER a_touch ON a;
        DROP MATERIALIZED VIEW reporting.mv;
        DROP VIEW reporting.v;
        ALTER TYPE mood RENAME VALUE 'hectic' TO 'busy';
        ALTER TABLE a DROP COLUMN extra;
        DROP SCHEMA reporting CASCADE;
        """,
    ),
    "properties_undone": step(
        """
        ALTER TABLE a SET (fillfactor = 70);
        ALTER TABLE a REPLICA IDENTITY FULL;
        ALTER TABLE a ALTER COLUMN name SET STORAGE EXTERNAL;
        ALTER TABLE a ALTER COLUMN name SET STATISTICS 500;
        ALTER TABLE a ALTER COLUMN name SET COMPRESSION pglz;
        CREATE TABLE b (id int); CREATE TABLE c () INHERITS (b);
        CREATE RULE a_log AS ON INSERT TO a DO ALSO NOTIFY a;
        CREATE PUBLICATION feed FOR TABLE a;
        ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;
        CREATE STATISTICS a_stats (ndistinct) ON name, score FROM a;
        CREATE TEXT SEARCH CONFIGURATION words (COPY = simple);
        DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '8MB'); END $$;
        CREATE VIEW v WITH (security_invoker = true) AS SELECT id FROM a;
        """,
        """
        DROP VIEW v;
        DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET work_mem', current_database()); END $$;
        DROP TEXT SEARCH CONFIGURATION words;
        DROP STATISTICS a_stats;
        ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM PUBLIC;
        DROP PUBLICATION feed;
        DROP RULE a_log ON a;
        DROP TABLE c; DROP TABLE b;
        ALTER TABLE a ALTER COLUMN name SET COMPRESSION DEFAULT;
        ALTER TABLE a ALTER COLUMN name SET STATISTICS -1;
        ALTER TABLE a ALTER COLUMN name SET STORAGE EXTENDED;
        ALTER TABLE a REPLICA IDENTITY DEFAULT;
        ALTER TABLE a RESET (fillfactor);
        """,
    ),
    "data_migration": step("INSERT INTO a (name) VALUES ('x'), ('y')", "DELETE FROM a WHERE name IN ('x', 'y')"),
    "python_step": (
        "from yoyo import step\n\n"
        "def up(conn):\n    conn.cursor().execute('CREATE TABLE py (id int)')\n\n"
        "def down(conn):\n    conn.cursor().execute('DROP TABLE py')\n\n"
        "step(up, down)\n"
    ),
}


def write_case(folder: Path, second: str | None, extra: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0001.base.py").write_text(BASE)
    if second is not None:
        (folder / "0002.change.py").write_text(second)
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_migration_is_flagged(case, templates, tmp_path, overlord_server):
    second, status, needle, *setup = BROKEN[case]
    role = f"ovl_role_{uuid.uuid4().hex[:8]}"
    extra = {"0001a.setup.py": step(*setup[0])} if setup else None
    folder = write_case(tmp_path / "migrations", second.replace("{role}", role), extra)
    try:
        report = roundtrip.run(templates, for_folder(folder))
    finally:
        if case == "reapply_fails":
            conn = templates.conn
            with conn.cursor() as cur:
                cur.execute(f"DROP ROLE IF EXISTS {role}")
    *earlier, change = report.migrations
    assert [m.status for m in earlier] == ["ok"] * (1 + len(setup)), earlier
    assert change.status == status, f"{case}: {change}"
    assert needle in (change.diff + (change.error or "")), f"{case}: {change.diff}\n{change.error}"
    assert not report.ok


@pytest.mark.parametrize("case", sorted(CORRECT))
def test_correct_migration_passes(case, templates, tmp_path):
    report = roundtrip.run(templates, for_folder(write_case(tmp_path / "migrations", CORRECT[case])))
    assert [v.status for v in report.migrations] == ["ok", "ok"], report.render()
    assert report.full_cycle is not None and report.full_cycle.ok, report.render()
    assert report.ok


def test_sql_file_migrations(templates, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001.base.sql").write_text("CREATE TABLE t (id int);\nCREATE INDEX t_id ON t (id);\n")
    (folder / "0001.base.rollback.sql").write_text("DROP TABLE t;\n")
    (folder / "0002.forgot.sql").write_text("CREATE TABLE u (id int);\n")
    report = roundtrip.run(templates, for_folder(folder))
    assert [v.status for v in report.migrations] == ["ok", "no_rollback"]


def test_one_bad_migration_does_not_hide_the_others(templates, tmp_path):
    folder = write_case(
        tmp_path / "migrations",
        step("CREATE TABLE b (id int); CREATE TABLE c (id int)", "DROP TABLE c"),  # irreversible
        {
            "0003.fine.py": step("CREATE TABLE d (id int)", "DROP TABLE d"),
            "0004.broken.py": step("CREATE TABLE e (id int REFERENCES nowhere(id))", "DROP TABLE e"),
            "0005.fine-too.py": step("CREATE TABLE f (id int)", "DROP TABLE f"),
            "0006.bad-rollback.py": step("CREATE TABLE g (id int)", "DROP TABLE nope"),
            "0007.last.py": step("ALTER TABLE f ADD COLUMN x int", "ALTER TABLE f DROP COLUMN x"),
        },
    )
    report = roundtrip.run(templates, for_folder(folder))
    assert [(v.id, v.status) for v in report.migrations] == [
        ("0001.base", "ok"), ("0002.change", "irreversible"), ("0003.fine", "ok"), ("0004.broken", "apply_failed"),
        ("0005.fine-too", "ok"), ("0006.bad-rollback", "rollback_failed"), ("0007.last", "ok"),
    ]
    # 0003 was checked on a clean database: its own diff is empty although 0002 left table b behind.
    assert report.migrations[2].diff == ""


def test_accepted_exceptions_are_shown_and_stale_ones_reported(templates, tmp_path):
    folder = write_case(tmp_path / "migrations", step("CREATE EXTENSION IF NOT EXISTS pg_trgm; CREATE TABLE b (id int)", "DROP TABLE b"))
    accepted = [
        {"migration": "0002.change", "object": "extension pg_trgm", "reason": "shared with other apps"},
        {"migration": "0002.change", "object": "table public.gone", "reason": "rotted entry"},
        {"migration": "0099.nothing", "object": "extension vector", "reason": "no such migration"},
    ]
    report = roundtrip.run(templates, for_folder(folder), accepted)
    change = report.migrations[1]
    assert change.status == "ok"
    assert change.accepted == [{"object": "extension pg_trgm", "reason": "shared with other apps"}]
    assert [(s["object"], s["why"]) for s in report.stale_exceptions] == [
        ("table public.gone", "nothing it names was left behind"), ("extension vector", "no such migration")]
    assert not report.ok
    text = report.render()
    assert "accepted: extension pg_trgm (shared with other apps)" in text and "stale exception" in text


def test_our_migrations_pass_with_the_extension_exception_accepted(templates):
    from pytest_overlord_db.config import resolve

    ours = resolve(Path(__file__).resolve().parent.parent)
    report = roundtrip.run(templates, for_folder(ours.migrations_dir), ours.accepted)
    assert report.ok, report.render()
    first = report.migrations[0]
    assert first.id == "0001.initial-schema"
    assert {a["object"] for a in first.accepted} == {"extension citext", "extension vector"}
    payload = json.loads(report.to_json())
    assert [m["status"] for m in payload["migrations"]] == ["ok"] * 5


def test_diff_renders_a_unified_diff_per_object():
    before = schema.Snapshot({"column public.a.name": "type text\ndefault 'x'::text", "table public.gone": "owner me"})
    after = schema.Snapshot({"column public.a.name": "type text\ndefault 'y'::text", "index public.idx": "CREATE INDEX idx ON a"})
    text = schema.compare(before, after).render("before apply", "after rollback")
    assert "+ left behind: index public.idx" in text
    assert "- missing:     table public.gone" in text
    assert "~ changed:     column public.a.name" in text
    assert "-default 'x'::text" in text and "+default 'y'::text" in text


def test_snapshot_is_stable_and_excludes_yoyo(overlord_fresh_db):
    import psycopg2

    conn = psycopg2.connect(overlord_fresh_db.url)
    try:
        skip = YoyoMigrator.bookkeeping
        first, second = schema.take(conn, bookkeeping=skip), schema.take(conn, bookkeeping=skip)
    finally:
        conn.close()
    assert first == second
    assert not [k for k in first.objects if "yoyo" in k or "_overlord_migration_timing" in k]
    assert "table public.users" in first.objects and "extension vector" in first.objects
    assert not [k for k in first.objects if k.startswith("function public.vector")]  # folded into the extension

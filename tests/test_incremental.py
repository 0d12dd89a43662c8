"""An incremental snapshot equals a whole one, key for key and definition for definition. Every change of
the pg_dump oracle, and drawn sequences of them, are checked in tests/test_pgdump_oracle.py (each step there
compares the two, on the clone it makes anyway); here: the fallbacks, what changes nothing, and the data."""
from __future__ import annotations

import difflib
import uuid

import psycopg2
import pytest
from test_pgdump_oracle import Base, base, drop_copy, run

from pytest_overlord_db import incremental, schema
from pytest_overlord_db.catalog import prepared
from pytest_overlord_db.walwatch import WalWatch

__all__ = ["base"]  # the fixture, shared with the oracle test


def _differences(whole: schema.Snapshot, part: schema.Snapshot) -> str:
    lines = []
    for key in sorted(whole.objects.keys() | part.objects.keys()):
        old, new = whole.objects.get(key), part.objects.get(key)
        if old != new:
            lines.append(f"{key}: whole {'absent' if old is None else 'present'}, incremental {'absent' if new is None else 'present'}")
            if old is not None and new is not None:
                lines.extend(difflib.unified_diff(old.splitlines(), new.splitlines(), "whole", "incremental", lineterm="", n=0))
    if whole.data != part.data or whole.rows != part.rows:
        lines.append(f"data differs: {whole.data} {whole.rows} != {part.data} {part.rows}")
    return "\n".join(lines)


class Walk:
    """A copy of the base, with the connection kept open as the round trip's walker keeps it."""

    def __init__(self, base: Base, rows: str = "", wal: WalWatch | None = None) -> None:
        templates = self.templates = base.templates
        self.wal = wal
        self.name = templates.clone(base.name, "incr")
        self.url = templates.url(self.name)
        if rows:
            assert run(self.url, rows) is None
        self.conn = psycopg2.connect(self.url)
        self.last = schema.take(self.conn)

    def step(self, statement: str) -> str:
        """Run ``statement``; what the incremental snapshot after it got wrong ("" when nothing)."""
        error = run(self.url, statement)
        assert error is None, f"{statement}: {error}"
        part = incremental.take(self.conn, self.last, wal=self.wal)
        whole = schema.take(self.conn)
        self.last = part
        return _differences(whole, part)

    def close(self) -> None:
        self.conn.close()
        drop_copy(self.templates, self.name)


def test_a_snapshot_without_marks_is_read_whole(base: Base) -> None:
    walk = Walk(base)
    try:
        run(walk.url, "CREATE TABLE app.later (id integer)")
        # without(): the marks no longer describe the objects, so nothing may be copied from it
        part = incremental.take(walk.conn, walk.last.without(["table app.items"]))
        assert "table app.items" in part.objects and "table app.later" in part.objects
        assert _differences(schema.take(walk.conn), part) == ""
    finally:
        walk.close()


@pytest.mark.parametrize("statement", ["SELECT 1", "COMMENT ON COLUMN app.items.name IS NULL"])
def test_nothing_changed_copies_everything(base: Base, statement: str) -> None:
    walk = Walk(base)
    try:
        assert walk.step(statement) == ""
        assert walk.step("SELECT nextval('app.counter')") == ""
    finally:
        walk.close()


ROWS = ("INSERT INTO app.items (name, price, mood, qty, note) VALUES ('a', 1.25, 'ok', 1, 'x'), ('b', 2.50, 'sad', 2, 'y'); "
        "INSERT INTO app.orders (item, placed) VALUES (1, '2026-01-01'), (2, NULL); "
        "INSERT INTO app.plain SELECT g, 'row ' || g, DATE '2026-01-01' + g FROM generate_series(1, 80) g")
DATA_CHANGES = [
    "UPDATE app.items SET price = 9.99 WHERE name = 'a'",
    "UPDATE app.items SET price = price",  # the same values, new row versions
    "DELETE FROM app.orders WHERE placed IS NULL",
    "DELETE FROM app.orders WHERE item = 2; INSERT INTO app.orders (item, placed) VALUES (2, '2026-02-02')",  # as many rows
    "DELETE FROM app.plain WHERE a = 7",  # a table over the row limit: count and digest
    "UPDATE app.plain SET b = 'changed' WHERE a = 70",
    "TRUNCATE app.orders",
    "ALTER TABLE app.plain ALTER COLUMN c TYPE text",  # rewritten rows keep their xmin
    "ALTER TYPE app.mood RENAME VALUE 'ok' TO 'fine'",  # rows print differently, none written
    "ALTER TABLE app.items ADD COLUMN extra integer DEFAULT 5",
    "INSERT INTO app.parent VALUES (1, 'p')",
    "SELECT 1",
]


# Without a WalWatch the data half reads every table, as schema.take does; with one (the round trip's case),
# these are the ways rows change: the plain ones, and with no WAL record of their table or through
# something other than the statement's table.
WAL_SETUP = (ROWS + "; CREATE TABLE app.scratch (id integer PRIMARY KEY, v text); INSERT INTO app.scratch VALUES (1, 'a'); "
             "ALTER TABLE app.scratch SET UNLOGGED; "
             "CREATE FUNCTION app.touch_plain() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN UPDATE app.plain SET b = NEW.b "
             "WHERE a = 1; RETURN NEW; END$$; CREATE TRIGGER touch_plain AFTER INSERT ON app.parent FOR EACH ROW EXECUTE FUNCTION app.touch_plain()")
WAL_CHANGES = DATA_CHANGES + [
    "INSERT INTO app.parent VALUES (2, 'through a trigger')",  # app.plain changes, its definition does not
    "UPDATE app.scratch SET v = 'b'",  # unlogged: no WAL for its rows
]


@pytest.fixture(scope="module")
def wal(base: Base):
    watch = WalWatch(base.templates)
    yield watch
    watch.close()


@pytest.mark.parametrize("statement", WAL_CHANGES)
def test_reading_only_the_tables_the_wal_names_gives_the_whole_snapshots_data(base: Base, wal: WalWatch,
                                                                              statement: str) -> None:
    assert wal.usable, "pg_walinspect is in the embedded server and we are its superuser"
    walk = Walk(base, rows=WAL_SETUP, wal=wal)
    answers, fallbacks = wal.answers, wal.fallbacks
    try:
        assert walk.step(statement) == ""
        assert walk.step("SELECT 1") == ""
        assert wal.answers > answers and wal.fallbacks == fallbacks
    finally:
        walk.close()


TO_TABLESPACE = "ALTER TABLE app.scratch SET LOGGED; ALTER TABLE app.scratch SET TABLESPACE {tablespace}"


@pytest.mark.parametrize("before, step", [
    ("", "SELECT 1"),  # unlogged from the start: found by the walk's first incremental snapshot
    ("", TO_TABLESPACE),  # a file number alone names a file in the database's tablespace; moved on the way
    ("; " + TO_TABLESPACE, "SELECT 1"),  # there from the start
], ids=["unlogged", "moved to a tablespace", "in a tablespace"])
def test_tables_the_wal_may_not_name_are_read_again_at_every_later_snapshot(base: Base, wal: WalWatch, before: str,
                                                                           step: str) -> None:
    # A tablespace is the server's: a name of its own, or two workers (or a run killed before its cleanup) meet.
    tablespace = f"overlord_in_place_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(base.templates.admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SET allow_in_place_tablespaces = on")
        cur.execute(f"CREATE TABLESPACE {tablespace} LOCATION ''")
    try:
        walk = Walk(base, rows=WAL_SETUP + before.format(tablespace=tablespace), wal=wal)
        try:
            assert walk.step(step.format(tablespace=tablespace)) == ""
            assert walk.step("SELECT 1") == ""  # what that snapshot found is carried on
            assert walk.step("UPDATE app.scratch SET v = 'c'") == ""
            assert walk.step("UPDATE app.scratch SET v = 'd'") == ""
        finally:
            walk.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLESPACE {tablespace}")
        admin.close()


def test_rows_of_a_composite_type_are_read_again_when_any_definition_changes(base: Base, wal: WalWatch) -> None:
    # A new attribute shows in every row of a column of that type: no WAL record, no change to the table.
    walk = Walk(base, rows=WAL_SETUP + "; CREATE TABLE app.boxed (id integer PRIMARY KEY, p app.pair); "
                "INSERT INTO app.boxed VALUES (1, ROW(1, 'a'))", wal=wal)
    try:
        assert walk.step("ALTER TYPE app.pair ADD ATTRIBUTE z integer") == ""
    finally:
        walk.close()


def test_a_watch_that_cannot_tell_answers_none(base: Base, wal: WalWatch) -> None:
    conn = psycopg2.connect(base.templates.url(base.name))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_insert_lsn()::text, oid FROM pg_database WHERE datname = current_database()")
            lsn, database = cur.fetchone()
    finally:
        conn.close()
    assert wal.blocks(database, lsn, lsn) == {}
    assert wal.blocks(database, "0/10", lsn) is None  # recycled long ago, or too much WAL: read the tables
    assert wal.blocks(database, lsn, "0/10") is None  # backwards


CATALOG_CHANGES = [
    "CREATE TABLE app.later (id integer PRIMARY KEY, note text)",
    "ALTER TABLE app.items RENAME COLUMN note TO remark",
    "COMMENT ON TABLE app.items IS 'now with a comment'",
    "VACUUM FULL pg_class",  # a catalog in a new file: read whole, once
    "VACUUM FULL pg_attribute",
]


@pytest.mark.parametrize("statement", CATALOG_CHANGES)
def test_reading_only_the_catalog_blocks_the_wal_names_gives_the_whole_snapshots_objects(
        base: Base, wal: WalWatch, statement: str) -> None:
    walk = Walk(base, wal=wal)
    try:
        assert walk.step("SELECT 1") == ""  # the walk's marks are now the copy's own
        assert walk.step(statement) == ""
        assert walk.step("CREATE TABLE app.after_it (id integer)") == ""
    finally:
        walk.close()


def test_the_catalog_half_reads_only_the_blocks_the_wal_names(base: Base, wal: WalWatch, monkeypatch) -> None:
    """A watch that names no block written hides a new table: what is read is only what the WAL names."""
    walk = Walk(base, wal=wal)
    try:
        assert walk.step("SELECT 1") == ""
        monkeypatch.setattr(wal, "blocks", lambda database, start, end: {})
        assert "table app.unseen: whole present, incremental absent" in walk.step("CREATE TABLE app.unseen (id integer)")
    finally:
        walk.close()


def test_catalog_statements_are_planned_again_when_the_database_has_doubled(base: Base) -> None:
    """A generic plan made on the empty database (sequential scans of one-page catalogs) must not serve the big one."""
    walk = Walk(base)
    query = "SELECT count(*) FROM pg_class WHERE relnamespace = $1::oid"
    try:
        with walk.conn.cursor() as cur:
            def prepared_at(objects: int) -> object:
                prepared.planned_for(cur, objects)
                prepared.execute(cur, query, ["11"])
                cur.execute("SELECT prepare_time FROM pg_prepared_statements WHERE statement LIKE %s", ("%relnamespace = $1%",))
                (time,), = cur.fetchall()
                return time

            first = prepared_at(100)  # size class 7
            assert prepared_at(127) == first
            doubled = prepared_at(200)  # class 8: planned again
            assert doubled != first
            assert prepared_at(100) == doubled  # one class down: a rollback's moment, kept
            assert prepared_at(40) != doubled  # two down: planned again
    finally:
        walk.close()

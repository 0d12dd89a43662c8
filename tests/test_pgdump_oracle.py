"""pg_dump is the oracle for the snapshot's completeness.

For a step that changes a database, pg_dump's verdict is whether ``pg_dump --schema-only --create`` (the
schema plus the database's own settings, ACL and comment) prints anything different afterwards; ours is
whether ``schema.compare`` finds a difference between the snapshots. The two must agree both ways: what a
dump shows must be in the snapshot (or a rollback that leaves it changed would pass), and nothing else may be
(or a correct rollback would fail). Each step also checks that the incremental snapshot the round trip's
walk takes equals a whole one. Every change in ``oracle_changes`` is checked once, in order, on one
database; then hypothesis draws sequences of changes, in any order and combination, on fresh clones of the
base. ``OVERLORD_ORACLE_EXAMPLES`` raises the number of drawn sequences (CI runs a fixed few).
"""
from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator, NamedTuple

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle_changes import BASE, CHANGES, ROLES

from pytest_overlord_db import incremental, schema, urls
from pytest_overlord_db.config import resolve
from pytest_overlord_db.servers import postmaster
from pytest_overlord_db.servers.base import ServerFacts
from pytest_overlord_db.template import Templates
from pytest_overlord_db.walwatch import WalWatch

EXAMPLES = int(os.environ.get("OVERLORD_ORACLE_EXAMPLES", "6"))
_NOISE = re.compile(r"^(--.*|\\(un)?restrict \S+|)$")  # comments, blank lines, PostgreSQL 18's random restrict key


def dump(url: str, name: str) -> str:
    """What pg_dump prints of the schema and the database's own properties, without its comments, and with the
    database's name (that of a copy of the base) as ``<db>``: every copy starts from the base's dump."""
    done = subprocess.run([str(postmaster.bin_dir() / "pg_dump"), "--schema-only", "--create", "--no-sync",
                           "--dbname", url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, urls.mask(done.stderr)
    return "\n".join(line.replace(name, "<db>") for line in done.stdout.splitlines() if not _NOISE.match(line))


def run(url: str, statement: str) -> str | None:
    """Run one change; the error when it fails (an earlier change may have taken away what it needs)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)  # several statements in one string run as one transaction: all or nothing
        return None
    except psycopg2.Error as exc:
        return str(exc).strip()
    finally:
        conn.close()


def drop_copy(templates: Templates, name: str) -> None:
    """Drop a copy of the base. A database with a subscription cannot be dropped: its subscriptions go first
    (they have no slot to drop remotely)."""
    conn = psycopg2.connect(templates.url(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT quote_ident(subname) FROM pg_subscription WHERE subdbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())")
        for (sub,) in cur.fetchall():
            cur.execute(f"DROP SUBSCRIPTION {sub}")
    conn.close()
    templates.drop(name)


class State:
    """A copy of the base database, its last dump and snapshot; ``step`` applies a change and says what went
    wrong if the two verdicts on it differ."""

    def __init__(self, base: Base, wal: WalWatch) -> None:
        self.templates, self.name = base.templates, base.templates.clone(base.name, "oracle")
        self.url = base.templates.url(self.name)
        self.conn = psycopg2.connect(self.url)  # kept open, as the round trip's walker keeps its own
        self.wal = wal
        # A copy's catalogs are the base's, row for row (their xmins too), so the base's dump and snapshot are
        # the copy's: taken once, not once per change. The copy's own marks (its WAL position, its database)
        # come from a first incremental snapshot, so each change's is read as the walk's are: by the catalog
        # blocks the WAL names.
        self.dump, self.error = base.dump, None
        self.snap = incremental.take(self.conn, base.snap, data=False, wal=wal)

    def step(self, name: str, statement: str, history: list[str]) -> str | None:
        self.error = run(self.url, statement)
        # The round trip's walk takes incremental snapshots (re-reading only what can have changed): each must
        # equal a whole one, and the whole one is what faces pg_dump.
        part = incremental.take(self.conn, self.snap, data=False, wal=self.wal)
        new_dump, new_snap = dump(self.url, self.name), schema.take(self.conn, data=False)
        history.append(name)
        if part.objects != new_snap.objects:
            return f"after {' → '.join(history)} ({statement}): the incremental snapshot differs from a whole one:\n" + \
                schema.compare(new_snap, part).render("whole", "incremental")
        new_snap = part  # the next step's incremental snapshot starts from it, as the walk's do
        ours = schema.compare(self.snap, new_snap)
        dump_diff = list(difflib.unified_diff(self.dump.splitlines(), new_dump.splitlines(), "before", "after",
                                              lineterm="", n=0))
        self.dump, self.snap = new_dump, new_snap
        if bool(ours) == bool(dump_diff):
            return None
        return (f"after {' → '.join(history)} ({statement}):\n"
                f"pg_dump says {'different' if dump_diff else 'same'}, the snapshot says {'different' if ours else 'same'}"
                "\npg_dump:\n" + "\n".join(dump_diff[2:40]) + "\nsnapshot:\n" + ours.render()[:3000])

    def close(self) -> None:
        self.conn.close()
        drop_copy(self.templates, self.name)


class Base(NamedTuple):
    templates: Templates
    name: str
    dump: str
    snap: schema.Snapshot


@pytest.fixture(scope="module")
def base(overlord_server) -> Iterator[Base]:
    facts = ServerFacts(overlord_server.version_num, overlord_server.version)
    templates = Templates(overlord_server.admin_url, resolve(Path(__file__).resolve().parent.parent), facts)
    admin = psycopg2.connect(overlord_server.admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        for role in ROLES:  # cluster-wide, so made once and kept (another worker may be using them)
            # two workers creating the same role at once: the later one fails on pg_authid's unique index
            cur.execute(f"DO $$BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$")
    admin.close()
    name = templates.create_empty("oracle")
    error = run(templates.url(name), BASE)
    assert error is None, f"the base schema did not load: {error}"
    conn = psycopg2.connect(templates.url(name))
    snap = schema.take(conn, data=False)
    conn.close()
    yield Base(templates, name, dump(templates.url(name), name), snap)
    templates.drop(name)
    templates.close()


@pytest.fixture(scope="module")
def oracle_wal(base: Base) -> Iterator[WalWatch]:
    watch = WalWatch(base.templates)
    assert watch.usable, "pg_walinspect is in the embedded server and we are its superuser"
    yield watch
    watch.close()


@pytest.mark.parametrize("change", CHANGES, ids=[name for name, _ in CHANGES])
def test_each_change_agrees_with_pg_dump(base: Base, oracle_wal: WalWatch, change: tuple[str, str]) -> None:
    state = State(base, oracle_wal)
    try:
        wrong = state.step(*change, [])
        assert state.error is None, f"the change does not run on the base schema: {state.error}"
        assert wrong is None, wrong
    finally:
        state.close()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.sampled_from(CHANGES), min_size=2, max_size=5))
def test_drawn_sequences_of_changes_agree_with_pg_dump(base: Base, oracle_wal: WalWatch, steps: list[tuple[str, str]]) -> None:
    state, history = State(base, oracle_wal), []
    try:
        for change, statement in steps:
            wrong = state.step(change, statement, history)
            assert wrong is None, wrong
    finally:
        state.close()

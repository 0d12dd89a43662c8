"""Property: walking the migration chain up and down to random targets always lands on the canonical schema.

A hypothesis state machine moves one database between levels of our own
migrations (apply or roll back to a random target, in random orders) and
after every move compares its snapshot with the canonical snapshot of that
level, taken once by applying the chain in order on a clean database.
Accepted exceptions (0001 keeps its extensions) are left out of the
comparison, as the round trip does.
"""
from __future__ import annotations

import os
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pytest_overlord_db import schema
from pytest_overlord_db.config import resolve
from pytest_overlord_db.migrators import for_folder
from pytest_overlord_db.servers.base import ServerFacts
from pytest_overlord_db.template import Templates

OURS = resolve(Path(__file__).resolve().parent.parent)
MIGRATOR = for_folder(OURS.migrations_dir)
CHAIN = MIGRATOR.chain()
ACCEPTED = {a["object"] for a in OURS.accepted}


@pytest.fixture(scope="module")
def canonical(overlord_server):
    """Templates on the session's server, and the snapshot of every level 0..n."""
    facts = ServerFacts(overlord_server.version_num, overlord_server.version)
    templates = Templates(overlord_server.admin_url, OURS, facts)
    name = templates.create_empty("roundtrip")
    url = templates.url(name)
    snapshots = []
    try:
        for level in range(len(CHAIN) + 1):
            if level:
                MIGRATOR.apply(url, CHAIN[level - 1: level], lock=False, quiet=True)
            conn = psycopg2.connect(url)
            snapshots.append(schema.take(conn, bookkeeping=MIGRATOR.bookkeeping).without(ACCEPTED))
            conn.close()
    finally:
        templates.drop(name)
    yield templates, snapshots
    templates.close()


def test_walking_the_chain_up_and_down(canonical):
    templates, snapshots = canonical

    class Walk(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.name = templates.create_empty("roundtrip")
            self.url = templates.url(self.name)
            self.level = 0

        @rule(level=st.integers(min_value=0, max_value=len(CHAIN)))
        def go_to(self, level: int) -> None:
            if level > self.level:
                MIGRATOR.apply(self.url, CHAIN[self.level:level], lock=False, quiet=True)
            elif level < self.level:
                MIGRATOR.rollback(self.url, CHAIN[level:self.level], lock=False, quiet=True)
            self.level = level

        @invariant()
        def schema_is_canonical(self) -> None:
            if not hasattr(self, "url"):
                return
            conn = psycopg2.connect(self.url)
            try:
                # Schema exact; data by row counts (0003's view and seeds-free chain hold no rows).
                diff = schema.compare(snapshots[self.level], schema.take(conn, bookkeeping=MIGRATOR.bookkeeping).without(ACCEPTED), counts_only=True)
            finally:
                conn.close()
            assert not diff, f"at level {self.level}:\n{diff.render('canonical', 'walked')}"

        def teardown(self) -> None:
            if hasattr(self, "name"):
                templates.drop(self.name)

    Walk.TestCase.settings = settings(
        max_examples=int(os.environ.get("OVERLORD_WALK_EXAMPLES", "8")), stateful_step_count=8, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Walk.TestCase().runTest()

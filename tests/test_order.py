"""yoyo's real order: a migration runs after what it depends on (``__depends__``, ``-- depends:``), not in
file-name order, and every reader of the chain (round trip, template, CLI targets, status, dry runs) agrees.

The folder below sorts by name as orders, customers, audit, but orders
depends on customers (SQL directive) and audit on orders (Python): yoyo
applies customers, orders, audit. In file-name order orders would fail.
"""
from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from typer.testing import CliRunner

from pytest_overlord_db import roundtrip
from pytest_overlord_db.cli import app
from pytest_overlord_db.errors import MigrationError
from pytest_overlord_db.migrators import for_folder

YOYO_ORDER = ["0002.customers", "0001.orders", "0003.audit"]


def write_dag(folder: Path, customers_rollback: str = "DROP TABLE customers;") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0001.orders.sql").write_text(
        "-- depends: 0002.customers\n"
        "CREATE TABLE orders (id serial PRIMARY KEY, customer int NOT NULL REFERENCES customers(id));\n")
    (folder / "0001.orders.rollback.sql").write_text("DROP TABLE orders;\n")
    (folder / "0002.customers.sql").write_text("CREATE TABLE customers (id serial PRIMARY KEY, name text);\n")
    (folder / "0002.customers.rollback.sql").write_text(customers_rollback + "\n")
    (folder / "0003.audit.py").write_text(
        'from yoyo import step\n__depends__ = {"0001.orders"}\n'
        'step("CREATE INDEX orders_by_customer ON orders (customer)", "DROP INDEX orders_by_customer")\n')
    return folder


def test_the_chain_is_in_the_order_yoyo_applies(tmp_path):
    chain = for_folder(write_dag(tmp_path / "migrations")).chain()
    assert [m.id for m in chain] == YOYO_ORDER


def test_correct_dependencies_pass_the_round_trip(templates, tmp_path):
    report = roundtrip.run(templates, for_folder(write_dag(tmp_path / "migrations")))
    assert [(v.id, v.status) for v in report.migrations] == [(m, "ok") for m in YOYO_ORDER], report.render()
    assert report.ok and report.full_cycle is not None and report.full_cycle.ok, report.render()


def test_a_broken_rollback_is_flagged_at_its_migration_in_yoyo_order(templates, tmp_path):
    # The customers rollback forgets the table and leaves a stray index it never made: irreversible.
    folder = write_dag(tmp_path / "migrations", "CREATE INDEX customers_name ON customers (name);")
    report = roundtrip.run(templates, for_folder(folder))
    statuses = [(v.id, v.status) for v in report.migrations]
    assert statuses == [("0002.customers", "irreversible"), ("0001.orders", "ok"), ("0003.audit", "ok")], report.render()
    assert "left behind: table public.customers" in report.migrations[0].diff
    assert not report.ok


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def public_tables(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%' AND tablename NOT LIKE '\\_overlord%'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


@pytest.fixture
def dag_project(tmp_path, monkeypatch):
    root = tmp_path / "app"
    write_dag(root / "migrations")
    (root / "yoyo.ini").write_text("[DEFAULT]\nsources = %(here)s/migrations\n")
    monkeypatch.chdir(root)
    for var in ("DATABASE_URL", "OVERLORD_ENV", "OVERLORD_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    return root


def test_cli_targets_status_and_dry_runs_follow_yoyo_order(dag_project, empty_db_url):
    dry = cli("migrate", "--dry-run", "--database-url", empty_db_url)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.index("0002.customers") < dry.stdout.index("0001.orders") < dry.stdout.index("0003.audit")

    # Up to 0001.orders by number: customers comes first (it is a dependency), audit stays pending.
    done = cli("migrate", "--target", "1", "--database-url", empty_db_url)
    assert done.exit_code == 0, done.output
    assert "Applied 2 migration(s)" in done.stdout
    assert public_tables(empty_db_url) == {"customers", "orders"}
    status = json.loads(cli("status", "--format", "json", "--database-url", empty_db_url).stdout)
    assert [a["id"] for a in status["applied"]] == YOYO_ORDER[:2] and status["pending"] == YOYO_ORDER[2:]

    assert cli("migrate", "--database-url", empty_db_url).exit_code == 0
    # Keep 0002.customers: orders and audit are rolled back, audit first.
    back = cli("rollback", "0002.customers", "--database-url", empty_db_url)
    assert back.exit_code == 0, back.output
    assert back.stdout.index("0003.audit") < back.stdout.index("0001.orders"), back.stdout
    assert public_tables(empty_db_url) == {"customers"}


def test_a_cycle_is_one_paragraph(tmp_path):
    folder = write_dag(tmp_path / "migrations")
    (folder / "0002.customers.sql").write_text("-- depends: 0003.audit\nCREATE TABLE customers (id serial PRIMARY KEY);\n")
    with pytest.raises(MigrationError, match=r"circular dependencies among 0001.orders, 0002.customers, 0003.audit: yoyo cannot apply"):
        for_folder(folder).chain()


def test_an_unknown_dependency_names_the_file_and_the_name(tmp_path):
    folder = write_dag(tmp_path / "migrations")
    (folder / "0003.audit.py").write_text('from yoyo import step\n__depends__ = {"0001.order"}\nstep("SELECT 1")\n')
    with pytest.raises(MigrationError) as caught:
        for_folder(folder).chain()
    message = str(caught.value)
    assert "0003.audit" in message and str(folder / "0003.audit.py") in message and "'0001.order'" in message

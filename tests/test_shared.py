"""Many runs, branches and CI runners on one server: names, project identity, template lifecycle, leases, admin db."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg2
import pytest

from pytest_overlord_db import leases
from pytest_overlord_db.config import resolve
from pytest_overlord_db.errors import ConfigError
from pytest_overlord_db.polling import poll
from pytest_overlord_db.servers.base import ServerFacts
from pytest_overlord_db.template import MARK, Templates, project_id

MIGRATION = 'from yoyo import step\nstep("CREATE TABLE {table} (id int)", "DROP TABLE {table}")\n'


def migrations(root: Path, table: str) -> Path:
    """A one-migration project at ``root`` creating ``table``."""
    (root / "migrations").mkdir(parents=True)
    (root / "migrations" / "0001.one.py").write_text(MIGRATION.format(table=table))
    return root


def manager(server, root: Path, **settings: object) -> Templates:
    return Templates(server.admin_url, resolve(root, environ={}, **settings), ServerFacts(server.version_num, server.version))


def test_project_identity_and_template_name_do_not_depend_on_the_checkout_path(tmp_path):
    one, two = migrations(tmp_path / "runner-1" / "app", "t"), migrations(tmp_path / "elsewhere" / "x" / "app", "t")
    first, second = resolve(one, environ={}), resolve(two, environ={})
    assert project_id(first) == project_id(second)
    other = migrations(tmp_path / "other-project", "t")
    assert project_id(resolve(other, environ={})) != project_id(first)
    assert project_id(resolve(other, environ={"OVERLORD_PROJECT": "app"})) == project_id(resolve(one, environ={"OVERLORD_PROJECT": "app"}))


def test_names_carry_the_host_identity_and_a_token_of_their_process(overlord_server, tmp_path):
    root = migrations(tmp_path / "app", "t")
    a, b = manager(overlord_server, root, host_id="runner-a"), manager(overlord_server, root, host_id="runner-b")
    name_a, name_b = a._new_name("fresh"), b._new_name("fresh")
    assert leases.NAME.fullmatch(name_a) and leases.NAME.fullmatch(name_b)
    assert leases.NAME.fullmatch(name_a).group("host") != leases.NAME.fullmatch(name_b).group("host")
    # Two processes (say, containers that both run pytest as pid 7) draw different tokens.
    code = "from pytest_overlord_db import leases; print(leases.run_token())"
    tokens = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
              for _ in range(3)}
    assert len(tokens) == 3 and leases.run_token() not in tokens


def test_leftovers_of_dead_runs_of_any_host_are_swept_and_nothing_else(overlord_server, tmp_path):
    """A run killed on another runner leaves marked and unmarked clones; the lease says they are dead."""
    templates = manager(overlord_server, migrations(tmp_path / "app", "t"))
    alive = psycopg2.connect(overlord_server.admin_url, application_name=leases.APP_PREFIX + "a11ce000")
    prefix, token = templates.prefix, leases.run_token()

    def mark(run: str | None, kind: str = "work", by: str = MARK) -> str:
        note = {"by": by, "kind": kind, "project": "00000000", "host": "runner-9"}
        return json.dumps(note | ({"run": run} if run else {}))

    cases = {  # label: (name, comment)
        "dead, unmarked, another host": (f"{prefix}f_abcdef_dead0001_1", None),
        "dead, marked, another project": ("ovl_0badc0de_w_abcdef_dead0002_1", mark("dead0002")),
        "dead build": (f"{prefix}b_abcdef_dead0003_1", mark("dead0003", "build")),
        "alive, another host": (f"{prefix}f_abcdef_a11ce000_1", None),
        "alive, marked": (f"{prefix}w_abcdef_a11ce000_2", mark("a11ce000")),
        "this run": (f"{prefix}w_{templates.host}_{token}_999", None),
        "old mark without a lease": (f"{prefix}w_abcdef_0ld00000_1", mark(None)),
        "a template of a dead run": (f"ovl_t_{uuid.uuid4().hex[:16]}", mark("dead0004", "template")),
        "not our shape": (f"{prefix}lookalike_dead0005", None),
        "our shape, someone else's comment": (f"{prefix}f_abcdef_dead0006_1", "the reporting team's copy"),
        "our shape, another tool's JSON": (f"{prefix}f_abcdef_dead0007_1", json.dumps({"by": "me", "run": "dead0007"})),
    }
    try:
        for name, comment in cases.values():
            templates._execute(f'CREATE DATABASE "{name}"')
            if comment is not None:
                templates._execute(f'COMMENT ON DATABASE "{name}" IS %s', (comment,))
        templates.drop_stale()
        gone = {label for label, (name, _) in cases.items() if not templates.exists(name)}
        assert gone == {"dead, unmarked, another host", "dead, marked, another project", "dead build"}
        alive.close()  # the lease ends with its last session
        assert poll(lambda: not templates._execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                                                   (leases.APP_PREFIX + "a11ce000",)), timeout=5, interval=0.01)
        templates.drop_stale()
        gone = {label for label, (name, _) in cases.items() if not templates.exists(name)}
        assert {"alive, another host", "alive, marked"} <= gone and "this run" not in gone
    finally:
        for name, _ in cases.values():
            templates._execute(f'DROP DATABASE IF EXISTS "{name}"')
        templates.close()
        alive.close()


def test_a_role_without_privileges_still_sees_the_leases_of_others(overlord_server):
    role = f"ovl_seer_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(overlord_server.admin_url, application_name=leases.APP_PREFIX + "5ee00000")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")
    try:
        limited = psycopg2.connect(overlord_server.admin_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1))
        with limited.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (leases.APP_PREFIX + "5ee00000",))
            assert cur.fetchone() == (1,)
        limited.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE {role}")
        admin.close()


def test_a_template_in_use_is_never_collected_and_unused_ones_go_by_count(overlord_server, tmp_path):
    """Branch A runs; branch B, with other migrations, builds its own template and keeps none unused: A's stays."""
    project = f"branches-{uuid.uuid4().hex[:6]}"
    branch_a = manager(overlord_server, migrations(tmp_path / "a" / "app", "from_a"), project=project, keep_templates=0)
    branch_b = manager(overlord_server, migrations(tmp_path / "b" / "app", "from_b"), project=project, keep_templates=0)
    later = manager(overlord_server, migrations(tmp_path / "c" / "app", "from_c"), project=project, keep_templates=1)
    try:
        a = branch_a.ensure()
        b = branch_b.ensure()
        assert not a.reused and not b.reused and a.name != b.name
        assert branch_b.exists(a.name), "B dropped the template A is using"
        clone = branch_a.clone(a.name, "work")  # A goes on cloning it
        branch_a.drop(clone)
        branch_a.close()  # A's run ends: its template is unused once the server has seen its session go
        assert poll(lambda: branch_b.collect(keep=b.name), timeout=5) == [a.name] and not branch_b.exists(a.name)
        branch_b.close()
        c = later.ensure()  # keeps one unused: B's
        assert later.exists(b.name) and later.exists(c.name)
    finally:
        for t in (branch_a, branch_b, later):
            for name, mark in t.ours():
                if mark["kind"] == "template":
                    t._execute(f'DROP DATABASE IF EXISTS "{name}"')
            t.close()


def test_unused_templates_go_by_age_and_their_use_is_noted(overlord_server, tmp_path):
    project = f"aging-{uuid.uuid4().hex[:6]}"
    old = manager(overlord_server, migrations(tmp_path / "old" / "app", "old_t"), project=project)
    new = manager(overlord_server, migrations(tmp_path / "new" / "app", "new_t"), project=project, template_max_age=3600.0)
    try:
        built = old.ensure()
        old.close()
        again = manager(overlord_server, migrations(tmp_path / "again" / "app", "old_t"), project=project)
        assert again.ensure().reused  # the same migrations at another path: the same template
        [(_, mark)] = [(n, m) for n, m in again.ours() if n == built.name]
        assert mark["used"] >= again._now() - 5
        again.close()
        fresh = new.ensure()
        assert new.exists(built.name)  # used a moment ago, and within the count
        new._execute(f'COMMENT ON DATABASE "{built.name}" IS %s', (json.dumps({**mark, "used": mark["used"] - 7200}),))
        assert poll(lambda: new.collect(keep=fresh.name), timeout=5) == [built.name]
    finally:
        for t in (old, new):
            for name, mark in t.ours():
                if mark["kind"] == "template":
                    t._execute(f'DROP DATABASE IF EXISTS "{name}"')
            t.close()


def test_collection_policy():
    unused = [("a", 100.0), ("b", 300.0), ("c", 200.0)]
    assert leases.to_collect(unused, keep=2, max_age=1e9, now=400.0) == ["a"]
    assert leases.to_collect(unused, keep=0, max_age=1e9, now=400.0) == ["b", "c", "a"]
    assert leases.to_collect(unused, keep=5, max_age=250.0, now=400.0) == ["a"]


@pytest.mark.parametrize("env, message", [
    ({"OVERLORD_KEEP_TEMPLATES": "-1"}, "keep-templates must be a whole number, 0 or more, not '-1' (from env OVERLORD_KEEP_TEMPLATES)"),
    ({"OVERLORD_TEMPLATE_MAX_AGE": "a week"}, "template-max-age must be a duration such as 90, 90s, 15m, 12h or 7d, not 'a week'"),
    ({"OVERLORD_LEASE_TIMEOUT": "0.5"}, "lease-timeout must be at least 1 second"),
])
def test_bad_shared_server_settings_are_one_paragraph(tmp_path, env, message):
    with pytest.raises(ConfigError) as failure:
        resolve(migrations(tmp_path / "app", "t"), environ=env)
    assert message in str(failure.value)


def test_durations(tmp_path):
    root = migrations(tmp_path / "app", "t")
    assert resolve(root, environ={"OVERLORD_TEMPLATE_MAX_AGE": "12h"}).template_max_age == 12 * 3600
    assert resolve(root, environ={}, template_max_age="90").template_max_age == 90
    assert resolve(root, environ={}).template_max_age == 7 * 86400


@pytest.mark.slow
def test_a_server_without_a_postgres_database_is_used_through_the_admin_db(project):
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(project.datadir.with_name(project.datadir.name + "-managed"))
    url = server.start()
    try:
        conn = psycopg2.connect(url.replace("/postgres?", "/template1?", 1))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE maintenance")
            cur.execute("DROP DATABASE postgres")  # as on many managed servers
        conn.close()
        project.write("test_it.py", "def test_it(overlord_db_sync):\n    overlord_db_sync.cursor().execute('SELECT * FROM users')\n")
        refused = project.run("-q", f"--overlord-db-url={url}", "test_it.py")
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "has no database postgres" in out and "--overlord-admin-db=NAME" in out, out
        assert "Traceback" not in out
        project.env["OVERLORD_ADMIN_DB"] = "maintenance"
        project.result("-q", f"--overlord-db-url={url}", "test_it.py").assert_outcomes(passed=1)
    finally:
        server.stop()


@pytest.mark.slow
def test_over_tcp_the_lease_session_gives_up_on_a_vanished_runner_within_the_lease_timeout(project, tmp_path):
    """On loopback, the admin session's keepalives and user timeout follow --overlord-lease-timeout."""
    import socket

    from pytest_overlord_db.servers import postmaster
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(project.datadir.with_name(project.datadir.name + "-tcp"))
    conn = psycopg2.connect(server.start())
    conn.autocommit = True
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with conn.cursor() as cur:
        cur.execute("ALTER SYSTEM SET listen_addresses = '127.0.0.1'")
        cur.execute(f"ALTER SYSTEM SET port = {port}")
    conn.close()
    postmaster.stop(server.pgdata)
    postmaster.start(server.pgdata, server.log_file, server.run_as)  # now on 127.0.0.1 only (and its socket)
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        info = psycopg2.connect(url)
        version = info.server_version
        info.close()
        reached = SimpleNamespace(admin_url=url, version_num=version, version=str(version))
        templates = manager(reached, migrations(tmp_path / "app", "t"), lease_timeout=12.0)
        try:
            settings = dict(templates._execute(
                "SELECT name, setting FROM pg_settings WHERE name LIKE 'tcp\\_%%' ORDER BY name"))
            name = templates._execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        finally:
            templates.close()
        assert settings == {"tcp_keepalives_count": "3", "tcp_keepalives_idle": "6", "tcp_keepalives_interval": "2",
                            "tcp_user_timeout": "12000"}
        assert name == [(leases.application_name(),)]
    finally:
        server.stop()

"""Many CI runners on one PostgreSQL server, as a scenario: tests/test_shared_runs.py asserts on it,
bench/bench_shared.py prints its figures.

Every runner is a whole pytest process of a throwaway project, checked out at a path of its own and
with a host identity of its own (``OVERLORD_HOST_ID``), reaching the server by URL. Branch A's runners
have this repository's migrations; branch B's have one more. An older migration set's template, which
no run uses, is on the server before they start, and so are a user's databases (one named with our
prefix and shape). While they run, one runner of each branch is SIGKILLed; then A's others finish, a
last run of A keeping no unused template (``--overlord-keep-templates=0``) runs while B's are still
going, and then B's finish.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from pytest_overlord_db import leases
from pytest_overlord_db.config import resolve
from pytest_overlord_db.migrators import for_folder
from pytest_overlord_db.servers import inspect_server
from pytest_overlord_db.template import Templates

REPO = Path(__file__).resolve().parent.parent
EXTRA = {
    "b": 'from yoyo import step\nstep("CREATE TABLE branch_b_only (id int)", "DROP TABLE branch_b_only")\n',
    "old": 'from yoyo import step\nstep("CREATE TABLE gone_long_ago (id int)", "DROP TABLE gone_long_ago")\n',
}
USER_DATABASES = ("precious", "ovl_lookalike")  # and one in our exact shape, commented by its owner (below)

RUN_TESTS = '''
import os
import pathlib
import time

import psycopg2
import pytest

BRANCH = os.environ["SHARED_RUN_BRANCH"]


def test_0_report(overlord_server):
    print("TEMPLATE", overlord_server.template, "REUSED", overlord_server.template_reused, flush=True)


@pytest.mark.parametrize("i", range(3))
def test_fresh(overlord_fresh_db, i):
    conn = psycopg2.connect(overlord_fresh_db.url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO tags (name) VALUES ('x')")
        cur.execute("SELECT count(*) FROM tags")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT to_regclass('branch_b_only') IS NOT NULL")
        assert cur.fetchone()[0] == (BRANCH == "b")  # each branch got its own migrations
    conn.close()


def test_sync(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("INSERT INTO tags (name) VALUES ('y')")
    cur.execute("SELECT count(*) FROM tags")
    assert cur.fetchone()[0] == 1


def test_z_until_released(overlord_server, overlord_db_sync):
    gate = pathlib.Path(os.environ["SHARED_RUN_GATE"])
    deadline = time.monotonic() + 90
    while not gate.exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.05)
    conn = psycopg2.connect(overlord_server.admin_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (overlord_server.template,))
        assert cur.fetchone()[0] == 1, "this run's template was dropped under it"
    conn.close()
'''


@dataclass
class Runner:
    host: str
    branch: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    killed: bool = False

    @property
    def output(self) -> str:
        return (self.root.parent / "out.txt").read_text(errors="replace")

    @property
    def tag(self) -> str:
        return leases.host_tag(self.host)


@dataclass
class Figures:
    runs: int = 0
    killed: int = 0
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    builds: dict[str, int] = field(default_factory=dict)  # template -> runs that built it
    templates_by_branch: dict[str, set[str]] = field(default_factory=dict)
    tokens: int = 0  # distinct run tokens seen in database names while the runs ran
    victims_left_at_kill: int = 0  # their databases on the server right after the kill
    victims_left_after_final: list[str] = field(default_factory=list)
    templates_after_final: set[str] = field(default_factory=set)
    old_template: str = ""
    leftovers_at_end: list[str] = field(default_factory=list)  # ours, other than templates, once all are done
    templates_at_end: set[str] = field(default_factory=set)
    user_databases_intact: bool = False
    seconds: float = 0.0


def checkout(base: Path, host: str, branch: str) -> Path:
    root = base / host / "checkout" / "app"  # a path of its own per runner; the same folder name, as on CI
    root.mkdir(parents=True)
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "seeds", root / "seeds")
    shutil.copy(REPO / "yoyo.ini", root / "yoyo.ini")
    if branch in EXTRA:
        (root / "migrations" / "0006.branch.py").write_text(EXTRA[branch])
    (root / "test_shared_run.py").write_text(RUN_TESTS)
    return root


def start(runner: Runner, url: str, base: Path, *flags: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERLORD_", "PYTEST_", "GITHUB_")) and k != "CI"}
    env.update(OVERLORD_DB_URL=url, OVERLORD_HOST_ID=runner.host, SHARED_RUN_BRANCH=runner.branch,
               SHARED_RUN_GATE=str(base / f"gate-{runner.branch}"))
    out = open(runner.root.parent / "out.txt", "wb")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-s", *flags,
               "test_shared_run.py"]
    runner.process = subprocess.Popen(command, cwd=runner.root, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()


def databases(url: str) -> dict[str, str | None]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE NOT datistemplate")
            return {name: comment for name, comment in cur.fetchall()}
    finally:
        conn.close()


def run_scenario(base: Path, url: str, per_branch: int = 3, timeout: float = 90) -> Figures:
    """``per_branch`` runners on each of two branches (one of each killed) plus a last run; the figures."""
    started = time.monotonic()
    figures = Figures()
    old_root = checkout(base, "runner-old", "old")
    settings = resolve(old_root, environ={})
    migrator = for_folder(settings.migrations_dir)
    old = Templates(url, settings, inspect_server(url, migrator.required_extensions()), migrator)
    try:
        figures.old_template = old.ensure().name
        shape_alike = f"{old.prefix}w_abcdef_0123abcd_1"
        for name in (*USER_DATABASES, shape_alike):
            old._execute(f'CREATE DATABASE "{name}"')
        old._execute(f'COMMENT ON DATABASE "{shape_alike}" IS %s', ("our analysts' copy, hands off",))
    finally:
        old.close()  # its run is over: the template is unused from now on
    user = {name: comment for name, comment in databases(url).items() if name in (*USER_DATABASES, shape_alike)}

    runners = [Runner(f"runner-{branch}{i}", branch, checkout(base, f"runner-{branch}{i}", branch))
               for branch in ("a", "b") for i in range(per_branch)]
    victims = [runners[per_branch - 1], runners[-1]]
    for runner in runners:
        start(runner, url, base)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # until every runner has clones of its own (it is mid-run)
        seen |= set(databases(url)) - set(user)
        tags = {m.group("host") for m in map(leases.NAME.fullmatch, seen) if m}
        if all(r.tag in tags and "TEMPLATE" in r.output for r in runners) or any(r.process.poll() is not None for r in runners if r.process):
            break
        time.sleep(0.05)
    for victim in victims:
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        victim.killed = True
    victim_tags = {v.tag for v in victims}
    figures.victims_left_at_kill = sum(1 for n in databases(url) if (m := leases.NAME.fullmatch(n)) and m.group("host") in victim_tags)
    (base / "gate-a").touch()
    for runner in runners[:per_branch]:
        assert runner.process is not None
        runner.process.wait(timeout=timeout)

    last = Runner("runner-last", "a", checkout(base, "runner-last", "a"))
    start(last, url, base, "--overlord-keep-templates=0")
    assert last.process is not None
    last.process.wait(timeout=timeout)
    after_final = databases(url)
    figures.victims_left_after_final = sorted(
        n for n in after_final if (m := leases.NAME.fullmatch(n)) and m.group("host") in victim_tags)
    figures.templates_after_final = {n for n in after_final if n.startswith("ovl_t_")}

    (base / "gate-b").touch()
    for runner in runners[per_branch:]:
        assert runner.process is not None
        runner.process.wait(timeout=timeout)
    runners.append(last)

    figures.runs, figures.killed = len(runners), len(victims)
    figures.tokens = len({m.group("run") for m in map(leases.NAME.fullmatch, seen) if m})
    for runner in runners:
        out = runner.output
        for template, reused in re.findall(r"TEMPLATE (\S+) REUSED (\w+)", out):
            figures.templates_by_branch.setdefault(runner.branch, set()).add(template)
            figures.builds[template] = figures.builds.get(template, 0) + (reused == "False")
        if runner.killed:
            continue
        assert runner.process is not None
        if runner.process.returncode == 0:
            figures.passed += 1
        else:
            figures.failed.append(f"{runner.host} (exit {runner.process.returncode}):\n{out[-3000:]}")
    end = databases(url)
    ours = [n for n in end if n.startswith("ovl_") and n not in user]
    figures.templates_at_end = {n for n in ours if n.startswith("ovl_t_")}
    figures.leftovers_at_end = sorted(n for n in ours if n not in figures.templates_at_end)
    figures.user_databases_intact = {n: c for n, c in end.items() if n in user} == user
    for name in user:  # the scenario's own
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()
    figures.seconds = time.monotonic() - started
    return figures


def describe(figures: Figures) -> str:
    return json.dumps({
        "runs": figures.runs, "killed": figures.killed, "passed": figures.passed, "failed": len(figures.failed),
        "builds per template": figures.builds, "run tokens seen": figures.tokens,
        "victims' databases at the kill": figures.victims_left_at_kill,
        "victims' databases left after the last run": len(figures.victims_left_after_final),
        "templates after the last run": sorted(figures.templates_after_final),
        "unused old template": figures.old_template,
        "leftovers at the end": len(figures.leftovers_at_end), "templates at the end": sorted(figures.templates_at_end),
        "user databases intact": figures.user_databases_intact, "seconds": round(figures.seconds, 1),
    }, indent=2)

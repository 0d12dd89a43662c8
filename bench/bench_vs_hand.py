"""The plugin's fixtures against the fixtures a user would write by hand, in the same run.

    python bench/bench_vs_hand.py [--sizes 100 1000] [--repeat 5] [--only fresh ...]

Each pair runs the same tests (every body one ``SELECT 1``, or nothing for the
clone-per-test pair) with our fixture and with a hand-written one on the same
server and the same migrated schema:

- sync: one psycopg2 connection for the session, ``rollback()`` after each test
  (psycopg2's own BEGIN before the first statement);
- async, session loop: one asyncpg connection, a transaction started and rolled
  back around each test;
- clone per test: ``CREATE DATABASE ... TEMPLATE`` before and ``DROP DATABASE
  ... WITH (FORCE)`` after each test;
- pytest-postgresql's ``postgresql`` fixture (``pip install -e ".[bench]"``;
  skipped with a line saying so when it is not installed): ``postgresql_noproc``
  on the same server, its template loaded with the same migrations by yoyo, as
  its README shows for a project's schema; per test a database from that
  template, a psycopg 3 connection, the drop.

Kinds run round-robin, repeat by repeat, so the machine's drift falls on all
alike. A figure is the slope of the median run at each size against the number
of tests, minus the same slope for tests without a database; the last column is
ours / hand-written (the targets: at most 1.0 for the transactional fixtures,
1.5 for ``overlord_db`` under a function-scoped loop against the hand-written
session-loop fixture).
Under each pair, the same from pytest's own timing of each test's setup, call
and teardown (the median of the runs at the largest size, the first and last
test left out), which the interpreter's start and collection do not disturb.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fixtures import REPO, in_test_seconds, make_project, run, run_timed, slope  # noqa: E402

CONFTEST = '''
import itertools, os
import asyncpg, psycopg2, pytest, pytest_asyncio

_names = itertools.count()


@pytest.fixture(scope="session")
def _hand_conn():
    conn = psycopg2.connect(os.environ["HAND_URL"])
    yield conn
    conn.close()


@pytest.fixture
def hand_sync(_hand_conn):
    yield _hand_conn
    _hand_conn.rollback()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _hand_aconn():
    conn = await asyncpg.connect(os.environ["HAND_URL"])
    yield conn
    await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def hand_async(_hand_aconn):
    tr = _hand_aconn.transaction()
    await tr.start()
    yield _hand_aconn
    await tr.rollback()


@pytest.fixture(scope="session")
def _hand_admin():
    conn = psycopg2.connect(os.environ["HAND_ADMIN_URL"])
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def hand_clone(_hand_admin):
    name = f"hand_{os.getpid()}_{next(_names)}"
    with _hand_admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE {os.environ['HAND_TEMPLATE']}")
    yield name
    with _hand_admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")


if os.environ.get("PPG_HOST"):  # pytest-postgresql's own fixture on the same server, our schema in its template
    from pytest_postgresql import factories

    def _migrate(host, port, user, dbname, password, **_):  # newer versions pass autocommit too
        from yoyo import get_backend, read_migrations

        backend = get_backend(f"postgresql://{user}@/{dbname}?host={host}&port={port}")
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations("migrations")))

    ppg_noproc = factories.postgresql_noproc(host=os.environ["PPG_HOST"], port=os.environ["PPG_PORT"],
                                             user="postgres", dbname="ppg", load=[_migrate])
    postgresql = factories.postgresql("ppg_noproc")
'''

SYNC = "def test_{i}({f}):\n    {f}.cursor().execute('SELECT 1')\n"
ASYNC = "@pytest.mark.asyncio{loop}\nasync def test_{i}({f}):\n    await {f}.fetchval('SELECT 1')\n"
BODIES = {
    "no db (sync)": "def test_{i}():\n    pass\n",
    "no db (async, function loop)": "@pytest.mark.asyncio\nasync def test_{i}():\n    pass\n",
    "no db (async, session loop)": "@pytest.mark.asyncio(loop_scope='session')\nasync def test_{i}():\n    pass\n",
    "hand-written sync": SYNC.replace("{f}", "hand_sync"),
    "overlord_db_sync": SYNC.replace("{f}", "overlord_db_sync"),
    "hand-written async, session loop": ASYNC.replace("{loop}", "(loop_scope='session')").replace("{f}", "hand_async"),
    "overlord_db, session loop": ASYNC.replace("{loop}", "(loop_scope='session')").replace("{f}", "overlord_db"),
    "overlord_db, function loop": ASYNC.replace("{loop}", "").replace("{f}", "overlord_db"),
    "hand-written clone per test": "def test_{i}(hand_clone):\n    pass\n",
    "overlord_fresh_db": "def test_{i}(overlord_fresh_db):\n    pass\n",
    "pytest-postgresql postgresql": "def test_{i}(postgresql):\n    pass\n",
}
BASELINE = {k: "no db (sync)" for k in BODIES}
BASELINE.update({k: "no db (async, session loop)" for k in BODIES if "session loop" in k})
BASELINE["overlord_db, function loop"] = "no db (async, function loop)"
PAIRS = [("overlord_db_sync", "hand-written sync", 1.0),
         ("overlord_db, session loop", "hand-written async, session loop", 1.0),
         ("overlord_db, function loop", "hand-written async, session loop", 1.5),
         ("overlord_fresh_db", "hand-written clone per test", 1.0),
         ("overlord_fresh_db", "pytest-postgresql postgresql", 0.35)]


def conn_facts(conn: "psycopg2.extensions.connection") -> tuple[str, str]:
    """The socket folder and port of a connection, for pytest-postgresql (which takes them apart)."""
    params = conn.get_dsn_parameters()
    return params["host"], params.get("port", "5432")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Sizes far apart, and the median of several runs: the start of each pytest run varies by ~0.1 s.
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", nargs="+", metavar="KIND",
                        help="run only the pairs whose fixture or comparison contains one of these words")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ovl-hand-"))
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    datadir = shm / f"ovl-hand-{uuid.uuid4().hex[:8]}"
    sys.path.insert(0, str(REPO))
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    server = EmbeddedServer(datadir)
    try:
        make_project(work)
        (work / "conftest.py").write_text(CONFTEST)
        first = work / "test_first.py"
        first.write_text("def test_it(overlord_db_sync):\n    pass\n")
        run(work, datadir, first)  # builds the template
        first.unlink()
        admin_url = server.start()  # kept up for the whole run, so every kind meets a running server
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ovl\\_t\\_%'")
            template = cur.fetchone()[0]
            cur.execute(f"CREATE DATABASE hand_work TEMPLATE {template}")
        env = {"HAND_URL": admin_url.replace("/postgres?", "/hand_work?", 1), "HAND_ADMIN_URL": admin_url,
               "HAND_TEMPLATE": template}
        pairs = [p for p in PAIRS if not args.only or any(w in p[0] or w in p[1] for w in args.only)]
        wanted = {k for p in pairs for k in p[:2]}
        kinds = {k: b for k, b in BODIES.items() if k in wanted or k in {BASELINE[w] for w in wanted}}
        if importlib.util.find_spec("pytest_postgresql"):
            facts = conn_facts(admin)
            env.update(PPG_HOST=facts[0], PPG_PORT=facts[1])
        else:
            print('pytest-postgresql is not installed (pip install -e ".[bench]"): its row is left out')
            kinds.pop("pytest-postgresql postgresql", None)
            pairs = [p for p in pairs if p[1] in kinds]
        files = {}
        for kind, body in kinds.items():
            for n in args.sizes:
                path = work / f"test_{abs(hash(kind)) % 10**8}_{n}.py"
                path.write_text("import pytest\n\n" + "\n".join(body.format(i=i) for i in range(n)))
                files[(kind, n)] = path
        walls: dict[tuple[str, int], list[float]] = {}
        inside: dict[str, list[float]] = {}  # per test, setup + call + teardown, at the largest size
        for _ in range(args.repeat):
            for kind in kinds:
                for n in args.sizes:
                    t, _cpu = run_timed(work, datadir, files[(kind, n)], extra_env=env)
                    walls.setdefault((kind, n), []).append(t)
                    if n == max(args.sizes):
                        inside.setdefault(kind, []).append(in_test_seconds(work))
        per_test = {k: slope(args.sizes, [statistics.median(walls[(k, n)]) for n in args.sizes]) for k in kinds}
        overhead = {k: per_test[k] - per_test[BASELINE[k]] for k in wanted if k in kinds}
        phases = {k: statistics.median(inside[k]) - statistics.median(inside[BASELINE[k]]) for k in wanted if k in kinds}
        print(f"per-test overhead over the same tests without a database; sizes {args.sizes}, median of {args.repeat}")
        print(f"{'ours':28} {'ms':>7}   {'hand-written':34} {'ms':>7} {'ratio':>6}  target")
        for ours, hand, target in pairs:
            measurable = overhead[ours] > 0 and overhead[hand] > 0  # a negative slope is the machine's noise
            ratio = overhead[ours] / overhead[hand] if measurable else float("nan")
            verdict = ("ok" if ratio <= target else "MISSED") if measurable else "noise: run again"
            print(f"{ours:28} {overhead[ours] * 1000:7.3f}   {hand:34} {overhead[hand] * 1000:7.3f} {ratio:6.2f}  "
                  f"<= {target:g} {verdict}")
            inner = phases[ours] / phases[hand] if phases[ours] > 0 and phases[hand] > 0 else float("nan")
            print(f"{'  in the tests phases':28} {phases[ours] * 1000:7.3f}   {'':34} {phases[hand] * 1000:7.3f} "
                  f"{inner:6.2f}")
        admin.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        for leftover in shm.glob(datadir.name + "*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()


if __name__ == "__main__":
    main()

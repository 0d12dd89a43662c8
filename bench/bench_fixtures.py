"""Per-test overhead of each fixture and session start cost, as a user sees them.

Whole pytest runs of a throwaway project (our migrations) at several sizes;
the per-test figure is the slope of wall time (the fastest of the repeats at
each size) against the number of tests, minus the slope of the same tests
using no database. Every figure is printed
with its ratio to the raw floor measured in the same run: one bare
BEGIN/ROLLBACK round trip on the same server. The last column is steadier:
the time pytest gives each test's setup, call and teardown (its own figures,
with the first and last test left out, as they carry the session's start and
end), the median of the runs at the largest size, minus the same for the
tests without a database; whatever runs in the background shows in it as
the tests it slows.

    python bench/bench_fixtures.py [--sizes 50 200 400] [--repeat 3] [--only overlord_migrator ...]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import psycopg2

REPO = Path(__file__).resolve().parent.parent

BODIES = {
    "baseline (async, no db)": ("@pytest.mark.asyncio\nasync def test_{i}():\n    pass\n", []),
    "baseline (sync, no db)": ("def test_{i}():\n    pass\n", []),
    # Every body is `pass`: the fixture's overhead is what is measured, not a query's, and not
    # pytest's assertion rewriting (which alone costs ~0.5 ms per assert in a new file).
    "overlord_db": ("@pytest.mark.asyncio\nasync def test_{i}(overlord_db):\n    pass\n", []),
    "overlord_db, session loop": ("@pytest.mark.asyncio(loop_scope='session')\nasync def test_{i}(overlord_db):\n    pass\n", []),
    "baseline (async session loop, no db)": ("@pytest.mark.asyncio(loop_scope='session')\nasync def test_{i}():\n    pass\n", []),
    "overlord_db_sync": ("def test_{i}(overlord_db_sync):\n    pass\n", []),
    "overlord_fresh_db": ("def test_{i}(overlord_fresh_db):\n    pass\n", []),
    "overlord_db, pgvector types off": ("@pytest.mark.asyncio\nasync def test_{i}(overlord_db):\n    pass\n", []),
    "overlord_pool": ("@pytest.mark.asyncio\nasync def test_{i}(overlord_pool):\n    pass\n", []),
    "overlord_psycopg": ("def test_{i}(overlord_psycopg):\n    pass\n", []),
    "overlord_psycopg_async": ("@pytest.mark.asyncio\nasync def test_{i}(overlord_psycopg_async):\n    pass\n", []),
    "overlord_sqla_session": ("def test_{i}(overlord_sqla_session):\n    pass\n", []),
    "overlord_sqla_async_session": ("@pytest.mark.asyncio\nasync def test_{i}(overlord_sqla_async_session):\n    pass\n", []),
    # SQLAlchemy connects on first use: what a test that uses its session pays (the query's own round trip too).
    "overlord_sqla_async_session, one query": ("@pytest.mark.asyncio\nasync def test_{i}(overlord_sqla_async_session):\n"
                                               "    await overlord_sqla_async_session.execute(__import__('sqlalchemy').text('SELECT 1'))\n",
                                               []),
    # Tests with work of their own (10 ms): the next clone is made, the last dropped, meanwhile.
    "baseline (sync, 10 ms of work)": ("import time\ndef test_{i}():\n    time.sleep(0.01)\n", []),
    "overlord_fresh_db, 10 ms of work": ("import time\ndef test_{i}(overlord_fresh_db):\n    time.sleep(0.01)\n", []),
    # An empty database of its own per test (made and dropped in the foreground), and then with the whole
    # chain applied by the migrator, which is what a data-migration test pays at most.
    "overlord_migrator": ("def test_{i}(overlord_migrator):\n    pass\n", []),
    "overlord_migrator, to the last": ("def test_{i}(overlord_migrator):\n    overlord_migrator.migrate_to(5)\n", []),
    # One clone for the whole module: per test, nearly nothing.
    "overlord_module_db": ("def test_{i}(overlord_module_db):\n    pass\n", []),
}
BASELINE_FOR = {
    "overlord_db": "baseline (async, no db)",
    "overlord_db, session loop": "baseline (async session loop, no db)",
    "overlord_db_sync": "baseline (sync, no db)",
    "overlord_fresh_db": "baseline (sync, no db)",
    "overlord_db, pgvector types off": "baseline (async, no db)",
    "overlord_pool": "baseline (async, no db)",
    "overlord_psycopg": "baseline (sync, no db)",
    "overlord_psycopg_async": "baseline (async, no db)",
    "overlord_sqla_session": "baseline (sync, no db)",
    "overlord_sqla_async_session": "baseline (async, no db)",
    "overlord_sqla_async_session, one query": "baseline (async, no db)",
    "overlord_fresh_db, 10 ms of work": "baseline (sync, 10 ms of work)",
    "overlord_migrator": "baseline (sync, no db)",
    "overlord_migrator, to the last": "baseline (sync, no db)",
    "overlord_module_db": "baseline (sync, no db)",
}


# Run with these variables (the other kinds run with pgvector's types on, when it is installed).
ENV_FOR = {"overlord_db, pgvector types off": {"OVERLORD_PGVECTOR_TYPES": "off"}}


# Loaded into every benchmark run (-p): the time pytest itself gives each test's setup, call and teardown,
# which leaves out the interpreter's start, collection and the session's end that make a whole run's wall
# time noisy. Written as JSON to $BENCH_PHASES at the session's end.
PHASES_PLUGIN = """
import json, os
_durations = []
def pytest_runtest_logreport(report):
    if report.when == "setup":
        _durations.append(0.0)
    _durations[-1] += report.duration
def pytest_sessionfinish(session):
    if os.environ.get("BENCH_PHASES"):
        with open(os.environ["BENCH_PHASES"], "w") as out:
            json.dump(_durations, out)
"""


def make_project(root: Path) -> None:
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "yoyo.ini", root / "yoyo.ini")
    (root / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (root / "bench_phases.py").write_text(PHASES_PLUGIN)


def in_test_seconds(root: Path) -> float:
    """The mean of setup + call + teardown over the tests of the last run in ``root``, but the first and the
    last: their setup and teardown hold the session's own (the server's start, the stack's shutdown)."""
    durations = json.loads((root / ".phases.json").read_text())[1:-1]
    return statistics.fmean(durations) if durations else 0.0


def write_tests(root: Path, kind: str, n: int) -> Path:
    body, _ = BODIES[kind]
    path = root / f"test_bench_{abs(hash(kind)) % 10**8}_{n}.py"
    path.write_text("import pytest\n\n" + "\n".join(body.format(i=i) for i in range(n)))
    return path


def run(root: Path, datadir: Path, *files: Path, pythonpath: str | None = None) -> float:
    """Wall seconds of one pytest run of ``files``."""
    return run_timed(root, datadir, *files, pythonpath=pythonpath)[0]


def run_timed(root: Path, datadir: Path, *files: Path, pythonpath: str | None = None,
              extra_env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and the pytest process's CPU seconds (user + system), which a busy machine disturbs less."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLORD_")}
    env["OVERLORD_DATADIR"] = str(datadir)
    env["BENCH_PHASES"] = str(root / ".phases.json")
    env.update(extra_env or {})
    if pythonpath:  # another checkout of the plugin, imported instead of the installed one
        env["PYTHONPATH"] = pythonpath
    started, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "bench_phases",
         *map(str, files)],
        cwd=root, env=env, capture_output=True, text=True,
    )
    elapsed, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def slope(xs: list[int], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def raw_floor(url: str) -> tuple[float, float]:
    """Median seconds of one BEGIN+ROLLBACK: psycopg2 and asyncpg."""
    conn = psycopg2.connect(url)
    samples = []
    for _ in range(2000):
        t = time.perf_counter()
        conn.cursor().execute("BEGIN; ROLLBACK")
        samples.append(time.perf_counter() - t)
    conn.close()

    async def async_floor() -> float:
        aconn = await asyncpg.connect(url)
        out = []
        for _ in range(2000):
            t = time.perf_counter()
            tr = aconn.transaction()
            await tr.start()
            await tr.rollback()
            out.append(time.perf_counter() - t)
        await aconn.close()
        return statistics.median(out)

    return statistics.median(samples), asyncio.run(async_floor())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 400])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", nargs="+", metavar="FIXTURE", help="measure these fixtures (and their baselines) only")
    args = parser.parse_args()
    chosen = [k for k in BASELINE_FOR if not args.only or k in args.only]

    work = Path(tempfile.mkdtemp(prefix="ovl-bench-"))
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    datadir = shm / f"ovl-bench-{uuid.uuid4().hex[:8]}"
    try:
        make_project(work)
        one_db = work / "test_one_db.py"
        one_db.write_text("def test_one(overlord_db_sync):\n    pass\n")
        one_plain = work / "test_one_plain.py"
        one_plain.write_text("def test_one():\n    pass\n")

        # Session start: cold (new data directory) and warm (template cached).
        plain = min(run(work, datadir, one_plain) for _ in range(args.repeat))
        cold = []
        for i in range(args.repeat):
            cold_dir = shm / f"{datadir.name}-cold{i}"
            cold.append(run(work, cold_dir, one_db))
            shutil.rmtree(cold_dir, ignore_errors=True)
        run(work, datadir, one_db)  # build the template once
        warm = min(run(work, datadir, one_db) for _ in range(args.repeat))

        # The raw floor, on the same server, started for the purpose.
        sys.path.insert(0, str(REPO))
        from pytest_overlord_db.servers.embedded import EmbeddedServer

        server = EmbeddedServer(datadir)
        url = server.start()
        try:
            floor_sync, floor_async = raw_floor(url)
        finally:
            server.stop()

        # The fastest of the repeats at each size: on a shared machine noise only ever adds time.
        kinds = list(dict.fromkeys(k for c in chosen for k in (BASELINE_FOR[c], c)))
        # The repeats go round all kinds in turn: a burst of load from another process on a shared
        # machine then spoils one run of several kinds, not every run of one kind.
        files = {(kind, n): write_tests(work, kind, n) for kind in kinds for n in args.sizes}
        best: dict[tuple[str, int], float] = {}
        inside: dict[str, list[float]] = {}  # per test, setup + call + teardown, at the largest size
        for _ in range(args.repeat):
            for (kind, n), path in files.items():
                seconds = run_timed(work, datadir, path, extra_env=ENV_FOR.get(kind))[0]
                best[(kind, n)] = min(seconds, best.get((kind, n), seconds))
                if n == max(args.sizes):
                    inside.setdefault(kind, []).append(in_test_seconds(work))
        slopes = {kind: slope(list(args.sizes), [best[(kind, n)] for n in args.sizes]) for kind in kinds}
        for path in files.values():
            path.unlink()

        ms = 1000.0
        print(f"embedded PostgreSQL, data in {shm}; sizes {args.sizes}, {args.repeat} runs each")
        print(f"raw floor: BEGIN+ROLLBACK psycopg2 {floor_sync*ms:.3f} ms, asyncpg {floor_async*ms:.3f} ms")
        print()
        print(f"{'fixture':34} {'per test':>10} {'x floor':>9}   target    in the test's phases (median of runs)")
        targets = {"overlord_db": 1.0, "overlord_db, session loop": 1.0, "overlord_db_sync": 1.0, "overlord_fresh_db": 15.0,
                   "overlord_fresh_db, 10 ms of work": 15.0, "overlord_db, pgvector types off": 1.0, "overlord_pool": 1.0,
                   "overlord_psycopg": 1.0, "overlord_psycopg_async": 1.0, "overlord_sqla_session": 5.0,
                   "overlord_sqla_async_session": 5.0, "overlord_sqla_async_session, one query": 5.0,
                   "overlord_migrator": 15.0,
                   "overlord_migrator, to the last": 200.0, "overlord_module_db": 0.5}
        for kind in chosen:
            base = BASELINE_FOR[kind]
            overhead = slopes[kind] - slopes[base]
            floor = floor_async if BASELINE_FOR[kind].startswith("baseline (async") else floor_sync
            verdict = "ok" if overhead * ms < targets[kind] else "MISSED"
            phases = statistics.median(inside[kind]) - statistics.median(inside[base])
            print(f"{kind:34} {overhead*ms:8.3f} ms {overhead/floor:8.1f}x   < {targets[kind]:g} ms {verdict}"
                  f"    {phases*ms:.3f} ms")
        print()
        cold_share, warm_share = statistics.median(cold) - plain, warm - plain
        print(f"session start, plugin's share: cold {cold_share:.3f} s (target < 2 s {'ok' if cold_share < 2 else 'MISSED'}), "
              f"warm {warm_share:.3f} s (target < 0.5 s {'ok' if warm_share < 0.5 else 'MISSED'})")
        print(f"  (pytest with one plain test: {plain:.3f} s; raw floor x{warm_share/floor_sync:.0f} warm)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in shm.glob(datadir.name + "*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()


if __name__ == "__main__":
    main()

"""Per-test overhead of the transactional fixtures, this checkout against another one, side by side.

    git worktree add /tmp/old <commit>
    python bench/bench_compare.py --against /tmp/old [--new /tmp/new] [--sizes 50 400] [--repeat 5]

The two versions run alternately, size by size and repeat by repeat, so the
machine's drift (these machines are shared) falls on both alike. Each figure
is a slope against the number of tests, minus the same slope for tests without
a database; the last column of each table is the ratio new / old.

Wall time on a shared 2-core machine moves by tens of percent between runs, so
three measures are printed, from noisiest to steadiest: wall time (the
fastest run at each size), the pytest process's CPU time (the least at each
size; the server's share is not in it), and the number of Python function
calls per test, counted by cProfile, which does not depend on the machine at
all and follows the plugin's Python work closely. The last table gives the calls
per test with the baseline included: a plugin that hooks every test raises
its own baseline, which hides that cost from the overhead figures.

With ``--start``, the session start instead: one-test runs of each version,
alternated, cold (a new data directory each time: initdb, the server's start,
the migrations, the template) and warm (the template found), minus a pytest run
of one plain test; medians of the repeats.
"""
from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fixtures import BASELINE_FOR, make_project, run, run_timed, slope, write_tests  # noqa: E402

KINDS = ["overlord_db", "overlord_db, session loop", "overlord_db_sync"]


def calls(root: Path, datadir: Path, tests: Path, pythonpath: str | None) -> int:
    """Python function calls of one whole pytest run of ``tests``, counted by cProfile."""
    out = root / "profile.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLORD_")}
    env["OVERLORD_DATADIR"] = str(datadir)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "pytest", "-q", "-p",
                           "no:cacheprovider", "-p", "no:xdist", str(tests)], cwd=root, env=env, capture_output=True,
                          text=True, check=True)
    # cProfile exits 0 whatever pytest's exit code was: a run that stopped early would count too little.
    if re.search(r"\d+ passed", done.stdout) is None or re.search(r"failed|error", done.stdout):
        raise SystemExit(f"the profiled run of {tests} did not pass:\n{done.stdout[-2000:]}")
    return int(pstats.Stats(str(out)).total_calls)  # type: ignore[attr-defined]


def table(title: str, unit: str, chosen: list[str], per_test: dict[tuple[str, str], float],
          absolute: bool = False) -> None:
    print(f"\n{title}")
    print(f"{'fixture':30} {'new':>12} {'old':>12} {'new/old':>8}")
    for kind in chosen:
        new, old = (per_test[(v, kind)] - (0.0 if absolute else per_test[(v, BASELINE_FOR[kind])])
                    for v in ("new", "old"))
        ratio = f"{new / old:8.2f}" if old > 0 else "     n/a"
        scale = 1000.0 if unit == "ms" else 1.0
        print(f"{kind:30} {new * scale:10.3f}{unit:>2} {old * scale:10.3f}{unit:>2} {ratio}")


def session_start(work: Path, shm: Path, versions: dict[str, str | None], repeat: int) -> None:
    """Print the plugin's share of a session's start, cold and warm, for each version."""
    one_db = work / "test_one_db.py"
    one_db.write_text("def test_one(overlord_db_sync):\n    pass\n")
    one_plain = work / "test_one_plain.py"
    one_plain.write_text("def test_one():\n    pass\n")
    warm_dirs = {v: shm / f"ovl-cmp-warm-{v}-{uuid.uuid4().hex[:8]}" for v in versions}
    plain: list[float] = []
    cold: dict[str, list[float]] = {v: [] for v in versions}
    warm: dict[str, list[float]] = {v: [] for v in versions}
    try:
        for version, path in versions.items():  # each version's template, built once
            run(work, warm_dirs[version], one_db, pythonpath=path)
        for i in range(repeat):
            plain.append(run(work, warm_dirs["new"], one_plain))
            for version, path in versions.items():
                cold_dir = shm / f"ovl-cmp-cold-{version}-{i}-{uuid.uuid4().hex[:8]}"
                try:
                    cold[version].append(run(work, cold_dir, one_db, pythonpath=path))
                finally:
                    _remove_datadir(cold_dir)
                warm[version].append(run(work, warm_dirs[version], one_db, pythonpath=path))
    finally:
        for d in warm_dirs.values():
            _remove_datadir(d)
    base = statistics.median(plain)
    print(f"session start, the plugin's share (median of {repeat} one-test runs each, minus a plain run's {base:.3f} s)")
    print(f"{'':6} {'new':>8} {'old':>8} {'new/old':>8}")
    for name, of in (("cold", cold), ("warm", warm)):
        new, old = (statistics.median(of[v]) - base for v in ("new", "old"))
        print(f"{name:6} {new:7.3f}s {old:7.3f}s {new / old if old > 0 else float('nan'):8.2f}")


def _remove_datadir(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    for sibling in d.parent.glob(d.name + ".*"):  # older versions keep their lock and client list beside it
        sibling.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="a checkout of the version to compare with")
    parser.add_argument("--new", help="a checkout to measure as the new version (default: the installed one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 400])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=sorted(BASELINE_FOR), metavar="FIXTURE",
                        help="which of bench_fixtures' kinds (default: the three transactional fixtures)")
    parser.add_argument("--start", action="store_true", help="compare the session's start, cold and warm, instead")
    args = parser.parse_args()
    chosen = args.kinds
    versions = {"new": str(Path(args.new).resolve()) if args.new else None, "old": str(Path(args.against).resolve())}
    kinds = chosen + sorted({BASELINE_FOR[k] for k in chosen})
    work = Path(tempfile.mkdtemp(prefix="ovl-cmp-"))
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    datadirs = {v: shm / f"ovl-cmp-{v}-{uuid.uuid4().hex[:8]}" for v in versions}
    try:
        make_project(work)
        if args.start:
            session_start(work, shm, versions, args.repeat)
            return
        files = {(k, n): write_tests(work, k, n) for k in kinds for n in args.sizes}
        for version, path in versions.items():  # build each version's template once
            run(work, datadirs[version], files[(chosen[0], args.sizes[0])], pythonpath=path)
        wall: dict[tuple[str, str, int], float] = {}
        cpu: dict[tuple[str, str, int], float] = {}
        for _ in range(args.repeat):
            for kind in kinds:
                for n in args.sizes:
                    for version, path in versions.items():
                        t, c = run_timed(work, datadirs[version], files[(kind, n)], pythonpath=path)
                        key = (version, kind, n)
                        wall[key], cpu[key] = min(wall.get(key, t), t), min(cpu.get(key, c), c)
        counted = {(v, k, n): float(calls(work, datadirs[v], files[(k, n)], versions[v]))
                   for k in kinds for n in args.sizes for v in versions}

        def slopes(of: dict[tuple[str, str, int], float]) -> dict[tuple[str, str], float]:
            return {(v, k): slope(args.sizes, [of[(v, k, n)] for n in args.sizes]) for v in versions for k in kinds}

        print(f"per-test overhead over the same tests without a database; sizes {args.sizes}, best of {args.repeat}")
        table("wall time", "ms", chosen, slopes(wall))
        table("CPU time of the pytest process", "ms", chosen, slopes(cpu))
        table("Python function calls (cProfile; the same on every machine)", "", chosen, slopes(counted))
        # A version whose plugin hooks every test (with a database or not) raises its own baseline, so its
        # overhead above reads smaller than the test really costs: the whole cost per test, baseline included.
        table("Python function calls per test, baseline included", "", chosen + sorted({BASELINE_FOR[k] for k in chosen}),
              slopes(counted), absolute=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for d in datadirs.values():
            _remove_datadir(d)


if __name__ == "__main__":
    main()

"""Per-test overhead of the transactional fixtures, this checkout against another one, side by side.

    git worktree add /tmp/old <commit>
    python bench/bench_compare.py --against /tmp/old [--sizes 50 400] [--repeat 5]

The two versions run alternately, size by size and repeat by repeat, so the
machine's drift (these machines are shared) falls on both alike; each figure
is the slope of the fastest run at each size, minus the same slope for tests
without a database, and the last column is the ratio new / old.

Wall time on a shared 2-core machine moves by tens of percent between runs, so
the script also runs the largest size once per version under cProfile and
prints the time pytest's per-test protocol took (setup, call, teardown: the
fixture's Python work and its round trips), which is far steadier.
"""
from __future__ import annotations

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fixtures import BASELINE_FOR, make_project, run, slope, write_tests  # noqa: E402

KINDS = ["overlord_db", "overlord_db, session loop", "overlord_db_sync"]


def profiled(root: Path, datadir: Path, tests: Path, pythonpath: str | None) -> float:
    """Seconds pytest spent in runtestprotocol over all tests of ``tests``, under cProfile."""
    out = root / "profile.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLORD_")}
    env["OVERLORD_DATADIR"] = str(datadir)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-p", "no:xdist", str(tests)], cwd=root, env=env, capture_output=True, check=True)
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    return sum(ct for (path, _, name), (_, _, _, ct, _) in stats.items()
               if name == "runtestprotocol" and path.endswith("_pytest/runner.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="a checkout of the version to compare with")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 400])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS, help="which fixtures (default: all three)")
    args = parser.parse_args()
    chosen = args.kinds
    versions = {"new": None, "old": str(Path(args.against).resolve())}
    kinds = chosen + sorted({BASELINE_FOR[k] for k in chosen})
    work = Path(tempfile.mkdtemp(prefix="ovl-cmp-"))
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    datadirs = {v: shm / f"ovl-cmp-{v}-{uuid.uuid4().hex[:8]}" for v in versions}
    try:
        make_project(work)
        files = {(k, n): write_tests(work, k, n) for k in kinds for n in args.sizes}
        for version, path in versions.items():  # build each version's template once
            run(work, datadirs[version], files[(chosen[0], args.sizes[0])], pythonpath=path)
        best: dict[tuple[str, str, int], float] = {}
        for _ in range(args.repeat):
            for kind in kinds:
                for n in args.sizes:
                    for version, path in versions.items():
                        t = run(work, datadirs[version], files[(kind, n)], pythonpath=path)
                        key = (version, kind, n)
                        best[key] = min(best.get(key, t), t)
        per_test = {(v, k): slope(args.sizes, [best[(v, k, n)] for n in args.sizes]) for v in versions for k in kinds}
        print(f"per-test overhead over the same tests without a database; sizes {args.sizes}, best of {args.repeat}")
        print(f"{'fixture':30} {'new':>10} {'old':>10} {'new/old':>8}")
        for kind in chosen:
            new, old = (per_test[(v, kind)] - per_test[(v, BASELINE_FOR[kind])] for v in versions)
            ratio = f"{new / old:8.2f}" if old > 0.00005 else "     n/a"
            print(f"{kind:30} {new * 1000:8.3f}ms {old * 1000:8.3f}ms {ratio}")
        n = max(args.sizes)
        print(f"\nunder cProfile, pytest's per-test protocol (runtestprotocol), {n} tests, one run each")
        print(f"{'fixture':30} {'new':>10} {'old':>10} {'new/old':>8}")
        for kind in chosen:
            new, old = (profiled(work, datadirs[v], files[(kind, n)], versions[v]) / n for v in versions)
            print(f"{kind:30} {new * 1000:8.3f}ms {old * 1000:8.3f}ms {new / old:8.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for d in datadirs.values():
            shutil.rmtree(d, ignore_errors=True)
            for sibling in d.parent.glob(d.name + ".*"):  # older versions keep their lock and client list beside it
                sibling.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

"""Many CI runners on one PostgreSQL server: runs, builds and leftovers (issue 11).

    python bench/bench_shared.py [--per-branch 3] [--rounds 1]

Each round starts an embedded server of its own, reached by URL as a CI service container would be, and
runs the scenario of tests/shared_scenario.py: PER_BRANCH pytest processes on each of two branches
(different migrations), each checked out at its own path with its own OVERLORD_HOST_ID, one per branch
SIGKILLed mid-run, then a last run keeping no unused template while branch B still runs. Printed per
round: runs, killed, passed, builds per template (1 each means the branch's runners shared it), the
killed runners' databases left after the last run, the templates then and at the end, and the databases
of ours other than templates left once everything has finished (0 expected). Exit 1 when anything is off.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from shared_scenario import describe, run_scenario  # noqa: E402

from pytest_overlord_db.servers.embedded import EmbeddedServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-branch", type=int, default=3, help="runners per branch (one of each is killed)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    ok = True
    for round_no in range(1, args.rounds + 1):
        base = Path(tempfile.mkdtemp(prefix="ovl-bench-shared-"))
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else base
        server = EmbeddedServer(shm / f"ovl-bench-shared-{uuid.uuid4().hex[:8]}")
        try:
            url = server.start()
            figures = run_scenario(base, url, per_branch=args.per_branch)
        finally:
            server.stop()
            shutil.rmtree(server.datadir, ignore_errors=True)
            shutil.rmtree(base, ignore_errors=True)
        print(f"round {round_no}: {describe(figures)}")
        for failure in figures.failed:
            print(failure)
        ok &= (not figures.failed and set(figures.builds.values()) == {1} and not figures.victims_left_after_final
               and not figures.leftovers_at_end and figures.old_template not in figures.templates_after_final
               and len(figures.templates_at_end) == 2 and figures.user_databases_intact)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

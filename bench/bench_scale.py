"""How the round trip's cost grows with the number of migrations.

    python bench/bench_scale.py [--sizes 50 200 500]

For each N, N generated correct yoyo migrations (each adds a table with an
index, a foreign key to the previous table, a view over it, and alters the
previous table) go through a whole round trip on one embedded server. Prints
the seconds, the seconds per migration, and the per-migration ratio against
the smallest N: flat (1.0) is the target, and 500 migrations in under a minute.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_overlord_db import roundtrip  # noqa: E402
from pytest_overlord_db.config import Settings  # noqa: E402
from pytest_overlord_db.migrators import for_folder  # noqa: E402
from pytest_overlord_db.servers import EmbeddedServer, inspect_server  # noqa: E402
from pytest_overlord_db.template import Templates  # noqa: E402


def migration(i: int) -> str:
    apply = [f"CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'x', score numeric(10,2), "
             f"seen timestamptz DEFAULT now(){f', prev int REFERENCES t{i - 1}(id)' if i else ''})",
             f"CREATE INDEX t{i}_name ON t{i} (name)",
             f"CREATE VIEW v{i} AS SELECT id, name FROM t{i} WHERE score > 0"]
    rollback = [f"DROP VIEW v{i}", f"DROP TABLE t{i}"]
    if i:
        apply.append(f"ALTER TABLE t{i - 1} ADD COLUMN note{i} text")
        rollback.insert(0, f"ALTER TABLE t{i - 1} DROP COLUMN note{i}")
    return f'from yoyo import step\nstep("""{"; ".join(apply)}""", """{"; ".join(rollback)}""")\n'


def write(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{i + 1:04d}.table-{i}.py").write_text(migration(i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 500])
    args = parser.parse_args()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    # The server's folder is made by the plugin (under root the server is its own user and could not pass
    # through a 0700 folder of ours); the projects go in a scratch folder of their own.
    datadir = base / f"ovl-bench-scale-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="ovl-bench-scale-"))
    server = EmbeddedServer(datadir)
    admin = server.start()
    rows = []
    try:
        for n in args.sizes:
            project = scratch / f"n{n}"
            write(project / "migrations", n)
            settings = Settings(root=project, migrations_dir=project / "migrations", seeds_dir=project / "seeds")
            migrator = for_folder(settings.migrations_dir)
            templates = Templates(admin, settings, inspect_server(admin, set()), migrator)
            try:
                started = time.perf_counter()
                report = roundtrip.run(templates, migrator)
                seconds = time.perf_counter() - started
            finally:
                templates.close()
            if not report.ok:
                raise SystemExit(report.render())
            rows.append((n, seconds))
            print(f"N={n}: {seconds:.1f} s", flush=True)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(datadir, ignore_errors=True)
    first = rows[0][1] / rows[0][0]
    print(f"\n{'migrations':>10} {'seconds':>9} {'s/migration':>12} {'vs N=' + str(rows[0][0]):>9}")
    for n, seconds in rows:
        print(f"{n:>10} {seconds:>9.1f} {seconds / n:>12.3f} {seconds / n / first:>9.2f}")
    print("target: flat per-migration cost; 500 migrations under 60 s")


if __name__ == "__main__":
    main()

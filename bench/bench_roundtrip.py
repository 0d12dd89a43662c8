"""Round trip of our migrations and the snapshot, on the embedded server.

    python bench/bench_roundtrip.py [--repeat 5]

Prints the median time of a full round trip (five migrations: apply ->
rollback -> apply each, then all down and up), of one catalog snapshot of the
fully migrated schema, and their ratio to the raw floor measured in the same
run (one bare BEGIN/ROLLBACK round trip).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_fixtures import raw_floor  # noqa: E402  (this folder is on sys.path when run as a script)

from pytest_overlord_db import roundtrip, schema  # noqa: E402
from pytest_overlord_db.config import resolve  # noqa: E402
from pytest_overlord_db.migrators import for_folder  # noqa: E402
from pytest_overlord_db.servers import EmbeddedServer, inspect_server  # noqa: E402
from pytest_overlord_db.template import Templates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = resolve(REPO)
    migrator = for_folder(settings.migrations_dir)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    # The server's own folder, made by the plugin: under root the server runs as its own user, which
    # could not pass through a 0700 folder of ours (mkdtemp's) to reach it.
    scratch = base / f"ovl-bench-rt-{uuid.uuid4().hex[:8]}"
    server = EmbeddedServer(scratch)
    admin = server.start()
    try:
        templates = Templates(admin, settings, inspect_server(admin, set()), migrator)
        floor_s, _ = raw_floor(admin)

        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            report = roundtrip.run(templates, migrator, settings.accepted)
            runs.append(time.perf_counter() - t)
            assert report.ok, report.render()

        name = templates.create_empty("roundtrip")
        url = templates.url(name)
        migrator.apply(url, migrator.chain(), lock=False, quiet=True)
        conn = psycopg2.connect(url)
        snaps = []
        for _ in range(args.repeat * 4):
            t = time.perf_counter()
            snap = schema.take(conn, bookkeeping=migrator.bookkeeping)
            snaps.append(time.perf_counter() - t)
        conn.close()
        templates.drop(name)
        templates.close()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    rt, sn = statistics.median(runs), statistics.median(snaps)
    print(f"raw floor: BEGIN+ROLLBACK (psycopg2) {floor_s*1000:.3f} ms")
    verdict = "ok" if rt < 3 else "MISSED"
    print(f"round trip of {len(report.migrations)} migrations: {rt:.3f} s  (x{rt/floor_s:,.0f} floor; target < 3 s {verdict})")
    print(f"snapshot of the migrated schema ({len(snap.objects)} objects, {len(snap.data)} tables): "
          f"{sn*1000:.1f} ms  (x{sn/floor_s:,.0f} floor; target < 100 ms {'ok' if sn < 0.1 else 'MISSED'})")


if __name__ == "__main__":
    main()

"""Fault injection: SIGKILL or SIGINT pytest and the CLI at a random moment, then check the next run recovers.

    python bench/bench_faults.py [--runs 24] [--seed 1]

Each run interrupts one of four things with one of two signals (each pair equally often, in random
order), sent to that process alone (it has a session of its own), at a moment drawn from a window
measured first: from the plugin's first step (for the cold build: the data folder appearing; else
half the start-up, spent in imports) to the end of a clean run.

  cold build     pytest on a new data folder: initdb, server start, the template's migrations
  tests          pytest on a warm folder, 240 tests of overlord_db, overlord_db_sync, overlord_fresh_db
  cli migrate    overlord-db migrate into an empty application database (this script keeps the server up)
  cli roundtrip  overlord-db roundtrip on the embedded server

Then the same thing runs cleanly: a small pytest file using the three fixtures, `migrate` then
`status` (nothing may be pending), or `roundtrip`. Recovered: it exits 0 within 120 s with no manual
step (no break-lock, no folder removed). Left once that run has finished (figures summed over runs):

  processes  postgres on the data folder (the last client stops the shared server, so none should run
             between runs), and whatever the interrupted run started: this script is their subreaper,
             so orphans (an initdb, say) stay visible. A SIGINTed process alive 30 s on is one too.
  databases  all but postgres, template0/1, the cached template (kept on purpose) and our application
             database; "unmarked" ones lack the plugin's COMMENT, so its clean-up never sees them
  locks      the data folder's lock file still held (the file itself stays, by design), other lock
             files in or beside it, yoyo_lock rows in the application database, advisory locks
  bytes      the leftover databases' folders, folders under pgdata/base of no database, and files in
             the data folder besides pgdata, lock, clients.json, server.log, overlord-db.json. Not the folder's total
             size: WAL is recycled and the log and catalogs grow on every run, by design.

Relay folders (/tmp/ovl-relay-*) of killed runs are swept by the first relay started once they are
60 s old, so they are counted after a last clean run past that age. After a run that left anything
the data folder is rebuilt, so every run starts clean. Exit code 0 when every run recovered and
nothing was left, else 1.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, NamedTuple

import psutil
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fixtures import REPO, make_project, write_tests  # noqa: E402

from pytest_overlord_db.servers import postmaster  # noqa: E402
from pytest_overlord_db.servers.datadirs import MARKER  # noqa: E402
from pytest_overlord_db.servers.embedded import EmbeddedServer  # noqa: E402

KINDS = ("cold build", "tests", "cli migrate", "cli roundtrip")
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT}
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
CLI = [str(Path(sys.executable).with_name("overlord-db"))]
APP_DB = "faults_app"
EXPECTED = {"pgdata", "lock", "clients.json", "server.log", MARKER}  # the marker: this folder is ours
RECOVERY_TIMEOUT, SIGINT_GRACE, RELAY_AGE = 120.0, 30.0, 61.0
SMALL = """import pytest

@pytest.mark.asyncio
async def test_async(overlord_db):
    assert await overlord_db.fetchval("SELECT count(*) FROM users") == 0

def test_sync(overlord_db_sync):
    overlord_db_sync.cursor().execute("SELECT count(*) FROM users")

def test_fresh(overlord_fresh_db):
    assert overlord_fresh_db.name.startswith("ovl_")
"""


class Run(NamedTuple):
    kind: str
    sig: str
    hit: bool  # still running when the signal was sent
    failure: str | None  # why the recovery run failed
    left: dict[str, list[str]]  # processes, databases, locks; files: what the bytes are
    size: int  # bytes left


class Bench:
    def __init__(self, work: Path, datadir: Path) -> None:
        self.work, self.datadir = work, datadir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLORD_")}
        self.env["OVERLORD_DATADIR"] = str(datadir)
        self.app_url = EmbeddedServer(datadir).url(APP_DB)
        self.big = [str(write_tests(work, k, 80)) for k in ("overlord_db", "overlord_db_sync", "overlord_fresh_db")]
        (work / "test_recover.py").write_text(SMALL)
        self.relays: set[Path] = set()  # relay folders that appeared while an interrupted run ran
        self.holder: EmbeddedServer | None = None  # this process as a client while the CLI migrates
        self.template: str | None = None  # learnt from the first clean run

    def commands(self, kind: str, recovery: bool) -> list[list[str]]:
        if kind == "cli migrate":
            status = [*CLI, "status", "--format", "json", "--database-url", self.app_url]
            return [[*CLI, "migrate", "--database-url", self.app_url], *([status] if recovery else [])]
        if kind == "cli roundtrip":
            return [[*CLI, "roundtrip"]]
        return [[*PYTEST, "test_recover.py"]] if recovery else [[*PYTEST, *self.big]]

    def start(self, cmd: list[str], out: IO[str] | int, err: IO[str] | int = subprocess.STDOUT,
              new_session: bool = False) -> subprocess.Popen[str]:
        return subprocess.Popen(cmd, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                text=True, start_new_session=new_session)

    def clean(self, kind: str, recovery: bool = True) -> str | None:
        """Run ``kind`` to completion; None when it succeeded, else why not."""
        for cmd in self.commands(kind, recovery):
            proc = self.start(cmd, subprocess.PIPE, subprocess.PIPE)  # stdout alone: status's JSON
            try:
                out, err = proc.communicate(timeout=RECOVERY_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return f"{' '.join(cmd[-3:])} did not finish within {RECOVERY_TIMEOUT:.0f} s"
            if proc.returncode != 0:
                return f"{' '.join(cmd[-3:])} exited {proc.returncode}: {tail(out + err)}"
            if "status" in cmd and json.loads(out)["pending"]:
                return f"still pending after migrate: {json.loads(out)['pending']}"
        return None

    def interrupt(self, kind: str, sig: int, delay: float) -> tuple[str | None, str]:
        """Start ``kind`` and signal it after ``delay``; its children's names then (None: it had ended), its last output."""
        log, before, moment = self.work / "interrupted.log", relay_dirs(), None
        with open(log, "w") as out:
            proc = self.start(self.commands(kind, recovery=False)[0], out, new_session=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            try:
                moment = ", ".join(sorted({c.name() for c in psutil.Process(proc.pid).children(recursive=True)}))
            except psutil.Error:
                moment = ""
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=SIGINT_GRACE)
            except subprocess.TimeoutExpired:
                pass  # still running: counted among the processes left, then killed by reset()
        self.relays |= relay_dirs() - before
        return moment, tail(log.read_text(errors="replace"))

    def sql(self, server: EmbeddedServer, *statements: str, database: str = "postgres") -> list[tuple[object, ...]]:
        conn = psycopg2.connect(server.url(database))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def app_start(self) -> None:
        self.holder = EmbeddedServer(self.datadir)
        self.holder.start()
        self.sql(self.holder, f"DROP DATABASE IF EXISTS {APP_DB} WITH (FORCE)", f"CREATE DATABASE {APP_DB}")

    def app_finish(self) -> list[str]:
        """yoyo's lock rows left in the application database; it is dropped, the server released."""
        assert self.holder is not None
        table = self.sql(self.holder, "SELECT to_regclass('yoyo_lock')", database=APP_DB)[0][0]
        rows = self.sql(self.holder, "SELECT pid FROM yoyo_lock", database=APP_DB) if table else []
        self.sql(self.holder, f"DROP DATABASE {APP_DB} WITH (FORCE)")
        self.holder.stop()
        self.holder = None
        return [f"yoyo_lock row of pid {pid} in {APP_DB}" for pid, in rows]

    def measure(self) -> tuple[dict[str, list[str]], int]:
        lock = self.datadir / "lock"
        strays = [*self.datadir.glob("*lock*"), *self.datadir.parent.glob(self.datadir.name + ".*")]
        locks = ([f"{lock} held"] if held(lock) else []) + [f"{p} exists" for p in strays if p != lock]
        left = {"processes": our_processes(self.datadir), "locks": locks, "files": []}
        server = EmbeddedServer(self.datadir)  # started once the processes are counted, so not among them
        server.start()
        try:
            rows = self.sql(server, "SELECT oid, datname, shobj_description(oid, 'pg_database') FROM pg_database")
            left["locks"] += [f"advisory lock {objid} of backend {pid}" for pid, objid in self.sql(
                server, "SELECT pid, objid FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()")]
        finally:
            server.stop()
        databases = {str(oid): str(name) for oid, name, _ in rows}
        self.template = self.template or next((n for n in databases.values() if n.startswith("ovl_") and "_t_" in n), None)
        keep = {"postgres", "template0", "template1", APP_DB, self.template}
        left["databases"] = sorted(f"{name}{'' if mark else ' (unmarked)'}" for _, name, mark in rows if name not in keep)
        size = 0
        for entry in (self.datadir / "pgdata" / "base").iterdir():
            if databases.get(entry.name) not in keep:
                size += du(entry)
                left["files"] += [] if entry.name in databases else [f"pgdata/base/{entry.name} (no database)"]
        for entry in self.datadir.iterdir():
            if entry.name not in EXPECTED:
                size += du(entry)
                left["files"].append(entry.name)
        return left, size

    def reset(self) -> None:
        """Stop the server, end what our runs left running, remove the data folder: the next run starts clean."""
        postmaster.stop(self.datadir / "pgdata")
        for proc in psutil.Process().children(recursive=True):
            try:
                proc.kill()  # started by a run of ours and still here once the server is stopped
            except psutil.Error:
                pass
        psutil.wait_procs(psutil.Process().children(), timeout=10)
        shutil.rmtree(self.datadir, ignore_errors=True)


def tail(text: str, lines: int = 4) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def relay_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("ovl-relay-*"))


def listening(folder: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(str(folder / ".s.PGSQL.5432")) == 0


def held(path: Path) -> bool:
    if not path.exists():
        return False
    with open(path) as fh:  # closing it releases our own probe
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # filelock's kind of lock
        except BlockingIOError:
            return True
    return False


def du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*")) if path.is_dir() else path.lstat().st_size


def our_processes(datadir: Path) -> list[str]:
    """Our live descendants, orphans of killed runs included, and anything whose command line names the data folder."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True)}
    found |= {p.pid: p for p in psutil.process_iter(["cmdline"]) if str(datadir) in " ".join(p.info["cmdline"] or [])}
    alive = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"pid {proc.pid} {' '.join(proc.cmdline())[:120]}")
            elif proc.ppid() == os.getpid():
                os.waitpid(proc.pid, os.WNOHANG)  # an adopted orphan that has ended
        except (psutil.Error, ChildProcessError):
            continue
    return alive


def calibrate(bench: Bench) -> dict[str, tuple[float, float]]:
    """Each kind's window of moments (see the module's docstring), from one clean run of each."""
    window: dict[str, tuple[float, float]] = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        if kind.startswith("cli"):
            subprocess.run([*CLI, "--help"], capture_output=True, check=False)
            begins = (time.perf_counter() - t0) / 2
        else:  # pytest's start-up ends where the plugin makes the data folder, in the cold run below
            begins = window["cold build"][0] / 2 if kind == "tests" else 0.0
        if kind == "cli migrate":
            bench.app_start()
        t0 = time.perf_counter()
        proc = bench.start(bench.commands(kind, recovery=kind == "cold build")[0], subprocess.DEVNULL)
        while kind == "cold build" and proc.poll() is None and not bench.datadir.exists():
            time.sleep(0.002)
            begins = time.perf_counter() - t0
        code = proc.wait()
        window[kind] = (begins, time.perf_counter() - t0)
        yoyo_rows = bench.app_finish() if kind == "cli migrate" else []
        if code or yoyo_rows:
            raise SystemExit(f"clean run of {kind} failed: {bench.clean(kind) or yoyo_rows}")
    return window


def report(runs: list[Run], relays: tuple[int, int]) -> None:
    print(f"\n{'fault':22} {'recovered':>9} {'hit':>6} {'processes':>10} {'databases':>10} {'locks':>6} {'bytes':>10}")
    for label in [*(f"{kind} {sig}" for kind in KINDS for sig in SIGNALS), "overall"]:
        if not (chosen := [r for r in runs if label in ("overall", f"{r.kind} {r.sig}")]):
            continue
        counts = [sum(len(r.left[f]) for r in chosen) for f in ("processes", "databases", "locks")]
        print(f"{label:22} {sum(r.failure is None for r in chosen):>4}/{len(chosen):<4} {sum(r.hit for r in chosen):>3}/"
              f"{len(chosen):<2} {counts[0]:>10} {counts[1]:>10} {counts[2]:>6} {sum(r.size for r in chosen):>10}")
    print(f"relay folders of interrupted runs: {relays[0]} there after their recovery run, "
          f"{relays[1]} after a clean run once {RELAY_AGE:.0f} s old")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=None, help="for the moments and the order (default: random)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of killed runs stay ours
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ovl-faults-"))
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    bench = Bench(work, shm / f"ovl-faults-{uuid.uuid4().hex[:8]}")
    try:
        make_project(work)
        shutil.copy(REPO / "pyproject.toml", work)  # its accepted round-trip exceptions: roundtrip exits 0
        window = calibrate(bench)
        first, size = bench.measure()
        print(f"seed {seed}; moments: " + ", ".join(f"{k} {a:.2f}-{b:.2f} s" for k, (a, b) in window.items()))
        print(f"template {bench.template}; clean runs leave: {first}, {size} bytes")

        pairs = [(kind, sig) for kind in KINDS for sig in SIGNALS]
        plan = [pairs[i % len(pairs)] for i in range(args.runs)]
        rng.shuffle(plan)
        runs: list[Run] = []
        bad: list[str] = []
        for number, (kind, sig) in enumerate(plan, 1):
            if kind == "cold build":
                bench.reset()
            if kind == "cli migrate":
                bench.app_start()
            delay = rng.uniform(*window[kind])
            moment, log = bench.interrupt(kind, SIGNALS[sig], delay)
            failure = bench.clean(kind)
            yoyo_rows = bench.app_finish() if kind == "cli migrate" else []
            left, size = bench.measure()
            left["locks"] += yoyo_rows
            runs.append(Run(kind, sig, moment is not None, failure, left, size))
            what: dict[str, object] = {k: v for k, v in left.items() if v} | ({"bytes": size} if size else {})
            at = f"after {delay:.2f} s " + ("(had ended)" if moment is None else f"(children: {moment or 'none'})")
            print(f"[{number:2}/{len(plan)}] {kind:13} {sig:7} {at}: "
                  f"{'recovered' if not failure else 'NOT RECOVERED: ' + failure}; {what or 'nothing left'}", flush=True)
            if failure or what:
                bad.append(f"{kind} {sig} {at}: {failure or 'recovered'}\n  left: {what}\n  interrupted run's output: {log}")
                bench.reset()

        # A last clean run once every relay folder of a killed run is old enough to be swept.
        waiting = [p.stat().st_mtime for p in bench.relays if p.exists()]
        if waiting:
            time.sleep(max(0.0, max(waiting) + RELAY_AGE - time.time()))
            bench.clean("tests")
        relays_left = [p for p in bench.relays if p.exists() and not listening(p)]
        report(runs, (len(waiting), len(relays_left)))
        print("".join(f"\n{b}\n" for b in bad) + f"\n{len(runs)} runs in {time.monotonic() - started:.0f} s")
        return 0 if not bad and not relays_left else 1
    finally:
        if bench.holder is not None:
            bench.holder.stop()
        bench.reset()
        shutil.rmtree(work, ignore_errors=True)
        for sibling in bench.datadir.parent.glob(bench.datadir.name + ".*"):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink()
        for relay in bench.relays:
            if relay.exists() and not listening(relay):
                shutil.rmtree(relay, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

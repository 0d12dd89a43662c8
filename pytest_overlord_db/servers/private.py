"""Directories only the developer (and, under root, the server's own OS user) can enter.

Everything the embedded server needs lives in one folder made here: created
0700 (never chmodded after the fact, never a folder we did not create), and
an existing one is used only when it is a real directory owned by the
expected user and closed to everybody else. A symlink or someone else's
folder in its place is refused with one clear error, never followed.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .. import urls
from ..errors import ServerError
from ..polling import poll


def _refuse(path: Path, why: str) -> ServerError:
    return ServerError(
        f"{path} {why}, so the plugin will not use it: a server there could be reached by other users of this "
        "machine. Remove it, or point --overlord-datadir at a folder of your own."
    )


def check_ours(path: Path, uid: int | None = None) -> None:
    """``path`` must be a real directory owned by ``uid`` (default: us) that nobody else can enter."""
    expected = os.geteuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise _refuse(path, "vanished while it was being set up") from None
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a directory")
    if info.st_uid != expected:
        whose = "us" if uid is None else f"the server's OS user (uid {expected}; under root it runs as its own user)"
        raise _refuse(path, f"belongs to uid {info.st_uid}, not to {whose}")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _refuse(path, f"is open to other users (mode {stat.S_IMODE(info.st_mode):o})")


HANDOVER_WAIT = 2.0  # how long a folder another process just made is given to change hands


def _handed_over_soon(path: Path) -> bool:
    """Whether ``path`` is an empty real directory of ours (euid): one another process made and has yet to chown."""
    try:
        info = os.lstat(path)
        return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not os.listdir(path)
    except OSError:
        return False


def make_private(path: Path, owner: tuple[int, int] | None = None) -> Path:
    """Create ``path`` 0700 (handed to ``owner``, the server's OS user, under root) with its missing parents,
    or check the existing ``path``. Existing parents are left as they are."""
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        # Parents made on the way to it, under root, only let the server's user pass through (0711).
        mode = 0o711 if owner is not None and folder != path else 0o700
        try:
            os.mkdir(folder, mode)  # mode & ~umask: never wider than asked
        except FileExistsError:
            continue  # someone else was faster: the check below decides
        if folder == path and owner is not None:
            os.chown(folder, *owner)  # just made by us, still empty
    if owner is not None:
        # Ours (root's) but not yet the server user's: another process (an xdist worker) made it a moment ago
        # and hands it over next. Waited for, briefly; then the check below decides.
        poll(lambda: not _handed_over_soon(path), HANDOVER_WAIT, 0.005)
    check_ours(path, owner[0] if owner else None)
    if owner is not None:
        for parent in path.parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                raise ServerError(
                    f"The embedded server runs as its own OS user under root, and it cannot pass through {parent} "
                    f"to reach {path}. The plugin does not change permissions of folders it did not create: "
                    "choose a --overlord-datadir under /dev/shm or /tmp.")
    return path


def replace_file(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write ``path`` whole or not at all: a private file of a name no other process uses, then renamed over it.
    A name shared by the writers (``path.tmp``) let two xdist workers starting at once rename each other's file
    away: the slower one failed with "No such file or directory"."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def reachable_only_here(url: str) -> bool:
    """Whether only this machine's processes can reach the server at ``url``: a unix socket in a folder closed to
    other users (as the embedded server's is)."""
    host = str(urls.dsn_parts(url).get("host") or "")
    if not host.startswith("/"):
        return False
    try:
        info = os.stat(host)
    except OSError:
        return False
    return not info.st_mode & 0o007 and (info.st_uid == os.getuid() or os.getuid() == 0)

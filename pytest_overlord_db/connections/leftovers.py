"""Relay folders left behind by killed runs (``/tmp/ovl-relay-*``), and their removal.

A relay removes its folder when it closes; a run killed with SIGKILL cannot.
Each new relay sweeps the folders of dead ones first: only this user's own,
real folders (never a link), with no relay listening in them, and not brand
new (a relay starting right now has made its folder but not yet bound its socket).
"""
from __future__ import annotations

import os
import socket
import stat
import time

SOCKET_NAME = ".s.PGSQL.5432"
PREFIX = "ovl-relay-"
MIN_AGE = 60.0  # seconds


def sweep_stale(folder: str) -> list[str]:
    """Remove the relay folders of dead runs in ``folder``; the paths removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or time.time() - info.st_mtime < MIN_AGE:
                continue
            path = os.path.join(entry.path, SOCKET_NAME)
            if os.path.lexists(path) and _listening(path):
                continue
            for name in os.listdir(entry.path):
                os.unlink(os.path.join(entry.path, name))
            os.rmdir(entry.path)
            removed.append(entry.path)
        except OSError:
            continue
    return removed


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # cannot tell: leave it
    finally:
        probe.close()

"""Who made a database, and whether that run still lives: host identity, run token, lease.

pids repeat across containers and CI runners, so a name built from one can
collide on a shared server. Every name carries instead the host's tag (a hash
of ``--overlord-host-id``, by default the host name) and a random token drawn
once per process. The token is also the ``application_name`` of every admin
session the process opens: while one of them is connected, its run is alive.
That is the lease: a run killed on any host loses it the moment the server
sees its connection close, and any later run on any host can tell. TCP
keepalives on the session bound how long a vanished runner (a VM that was
switched off) can keep it.

A database is named before it can be marked (``CREATE DATABASE`` and
``COMMENT`` are two statements), so the name alone says which run made it:
an unmarked database of a dead run is swept like a marked one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
from typing import Any, Iterable

from .config import Settings

MARK = "pytest-overlord-db"
APP_PREFIX = "ovl-run:"
CLONE_KINDS = ("build", "work", "fresh", "roundtrip", "kept")  # "kept": by --overlord-keep-failed, until its run ends
# ovl_<project>_<kind letter>_<host tag>_<run token>_<counter>
NAME = re.compile(r"ovl_[0-9a-f]{8}_[bwfr]_(?P<host>[0-9a-f]{6})_(?P<run>[0-9a-f]{8})_\d+")
_tokens: dict[int, str] = {}


def project_id(settings: Settings) -> str:
    """Groups one project's (and seed choice's) templates for collection on a shared server.

    Never the checkout's path, which differs on every runner: ``--overlord-project``, else the project
    folder's name and the migrations folder's place in it.
    """
    if settings.project:
        ident = settings.project
    else:
        try:
            where = settings.migrations_dir.relative_to(settings.root).as_posix()
        except ValueError:
            where = settings.migrations_dir.name
        ident = f"{settings.root.name}/{where}"
    return hashlib.sha256(f"{ident}\0{settings.seed or ''}".encode()).hexdigest()[:8]


def lock_id(purpose: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{MARK}:{purpose}:{key}".encode()).digest()[:8], "big", signed=True)


def host_identity(configured: str | None) -> str:
    return configured or socket.gethostname()


def host_tag(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:6]


def run_token() -> str:
    """Random, once per process: a forked child draws its own."""
    pid = os.getpid()
    if pid not in _tokens:
        _tokens[pid] = secrets.token_hex(4)
    return _tokens[pid]


def application_name() -> str:
    return APP_PREFIX + run_token()


def session_settings(lease_timeout: float) -> list[tuple[str, str]]:
    """Settings for an admin session over TCP: a peer that stops answering is dropped (and its lease
    ends) within about ``lease_timeout`` seconds instead of the kernel's two hours. Unix sockets ignore them."""
    idle, interval = max(1, int(lease_timeout / 2)), max(1, int(lease_timeout / 6))
    return [("tcp_keepalives_idle", str(idle)), ("tcp_keepalives_interval", str(interval)),
            ("tcp_keepalives_count", "3"), ("tcp_user_timeout", str(int(lease_timeout * 1000)))]


def read_mark(comment: str | None) -> dict[str, Any] | None:
    """The plugin's mark in a database comment, or None when the comment is not ours."""
    try:
        mark = json.loads(comment or "")
    except ValueError:
        return None
    return mark if isinstance(mark, dict) and mark.get("by") == MARK else None


def dead_leftovers(rows: Iterable[tuple[str, str | None]], live: set[str]) -> list[str]:
    """Of (name, comment) rows, the clones and builds whose run holds no lease any more.

    Only databases this plugin provably made: marked by it with a run token, or
    never commented and named in its exact shape. A comment of anyone else, or
    a mark of an older plugin without a token, leaves a database alone.
    """
    dead = []
    for name, comment in rows:
        mark = read_mark(comment)
        if mark is not None:
            run = mark.get("run")
            if mark.get("kind") in CLONE_KINDS and isinstance(run, str) and run not in live:
                dead.append(name)
        elif comment is None and (found := NAME.fullmatch(name)) and found.group("run") not in live:
            dead.append(name)
    return dead


def to_collect(unused: list[tuple[str, float]], keep: int, max_age: float, now: float) -> list[str]:
    """Of unused templates as (name, last used), those to drop: all but the ``keep`` most recently used, and
    any not used for ``max_age`` seconds."""
    newest_first = sorted(unused, key=lambda item: item[1], reverse=True)
    return [name for i, (name, used) in enumerate(newest_first) if i >= keep or now - used > max_age]

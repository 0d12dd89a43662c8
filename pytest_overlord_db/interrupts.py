"""Ctrl-C and SIGTERM stop a statement the server is running, at once.

While psycopg2 waits inside libpq for the server, Python's signal handlers
cannot run: a migration doing ``pg_sleep(600)`` ignored Ctrl-C. So the
signals are also delivered to a small thread (``signal.set_wakeup_fd``), which
cancels the statement of every connection registered here (``PQcancel`` is
safe from any thread); the server answers at once, the main thread gets its
``KeyboardInterrupt`` and everything unwinds as usual: the half-built
database is dropped, locks are released, the server is stopped. SIGTERM is
turned into the same interrupt when nobody else handles it.

The registry is process-wide on purpose, as signal handling is.
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

_lock = threading.Lock()
_connections: set[Any] = set()
_installed = False


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cancel_all() -> None:
    """Cancel whatever statement each registered connection is running."""
    with _lock:
        found = list(_connections)
    for conn in found:
        try:
            if not conn.closed:
                conn.cancel()
        except Exception:  # noqa: BLE001 - a connection going away meanwhile is fine
            pass


def _watch(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        if any(signum in (signal.SIGINT, signal.SIGTERM) for signum in data):
            cancel_all()


def install() -> bool:
    """Start watching SIGINT and SIGTERM (main thread only; once). False when something else already owns
    the wakeup fd, in which case nothing is changed."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    read, write = os.pipe()
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    if previous != -1:  # an event loop or another library uses it: leave theirs in place
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        return False
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    threading.Thread(target=_watch, args=(read,), name="overlord-interrupts", daemon=True).start()
    _installed = True
    return True


def register(conn: Any) -> None:
    with _lock:
        _connections.add(conn)


def unregister(conn: Any) -> None:
    with _lock:
        _connections.discard(conn)


def close(conn: Any) -> None:
    """Stop watching ``conn`` and close it."""
    unregister(conn)
    if not conn.closed:
        conn.close()

"""Which event loop a test runs in, so ``overlord_db`` connects in that loop.

An asyncpg connection belongs to the loop that made it, and pytest-asyncio
runs an async fixture in the loop of the fixture's own ``loop_scope``. It has
no public way to say "the requesting test's loop", so the plugin defines one
fixture per loop scope and ``overlord_db`` (a plain fixture) asks for the one
matching the test, by the same rule pytest-asyncio uses to pick the test's
loop: the ``asyncio`` marker's ``loop_scope``, else the
``asyncio_default_test_loop_scope`` ini option, else ``function``. No private
name of pytest-asyncio is touched (1.2 is the first release that runs a test
in its own scope's loop, 1.4 the first that documents a synchronous fixture
seeing its loop scope's loop; see pyproject's lower bound).
"""
from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any, Literal

import pytest_asyncio

LoopScope = Literal["function", "class", "module", "package", "session"]


def test_loop_scope(item: Any) -> str:
    marker = item.get_closest_marker("asyncio") if hasattr(item, "get_closest_marker") else None
    if marker is None and not pytest_asyncio.is_async_test(item):
        return "function"  # a sync test: any loop is its own
    scope = (marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")) if marker else None
    return str(scope or item.config.getini("asyncio_default_test_loop_scope") or "function")



def current_loop() -> asyncio.AbstractEventLoop:
    """The loop pytest-asyncio set for a synchronous fixture (not running yet).

    Python 3.10.0–3.10.8 and 3.11.0 warn on ``get_event_loop()`` outside a running loop even when a
    loop is set, which ``-W error`` turns into a failure; pytest-asyncio silences it the same way.
    Only those versions pay for the warnings filter (it resets every warning cache)."""
    if (3, 10, 9) <= sys.version_info[:3] != (3, 11, 0):
        return asyncio.get_event_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop()

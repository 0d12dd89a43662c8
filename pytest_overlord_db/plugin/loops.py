"""Which event loop a test runs in, so ``overlord_db`` connects in that loop.

An asyncpg connection belongs to the loop that made it. pytest-asyncio runs
an async fixture in the loop of the fixture's own loop scope, so the
fixture's loop scope has to follow the test's. pytest-asyncio has no public
way to say "the requesting test's loop": this is the one place that reaches
into it (its ``_loop_scope`` attribute on the fixture function, read by
pytest-asyncio 1.x when it sets the fixture up).
"""
from __future__ import annotations

from typing import Any, Generator

import pytest

SCOPE_NODES: dict[str, type] = {"package": pytest.Package, "module": pytest.Module, "class": pytest.Class}


def test_loop_scope(item: Any) -> str:
    marker = item.get_closest_marker("asyncio") if hasattr(item, "get_closest_marker") else None
    scope = (marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")) if marker else None
    return scope or item.config.getini("asyncio_default_test_loop_scope") or "function"


def scope_node(request: pytest.FixtureRequest, scope: str) -> Any:
    """The collection node whose end is the end of a loop of ``scope``."""
    if scope == "session":
        return request.node.session
    return request.node.getparent(SCOPE_NODES[scope]) or request.node.session


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    if fixturedef.argname != "overlord_db":
        return (yield)
    func = fixturedef.func
    previous = getattr(func, "_loop_scope", None)
    func._loop_scope = test_loop_scope(request.node)
    try:
        return (yield)
    finally:
        func._loop_scope = previous

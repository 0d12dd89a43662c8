"""overlord_db follows the test's event loop, whatever its scope."""
from __future__ import annotations

import asyncio

import pytest

seen: dict[str, set[int]] = {"module": set(), "class": set()}


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_first(overlord_db):
    seen["module"].add(id(overlord_db))
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('module-loop')")
    assert overlord_db._loop is asyncio.get_running_loop()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_second_reuses_connection(overlord_db):
    seen["module"].add(id(overlord_db))
    assert len(seen["module"]) == 1  # one connection for the module's loop
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0


@pytest.mark.asyncio(loop_scope="class")
class TestClassLoop:
    async def test_one(self, overlord_db):
        seen["class"].add(id(overlord_db))
        assert overlord_db._loop is asyncio.get_running_loop()
        await overlord_db.execute("INSERT INTO tags (name) VALUES ('class-loop')")

    async def test_two(self, overlord_db):
        seen["class"].add(id(overlord_db))
        assert len(seen["class"]) == 1
        assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop(overlord_db):
    assert overlord_db._loop is asyncio.get_running_loop()
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0


@pytest.mark.asyncio
async def test_function_loop_after_wider_ones(overlord_db):
    assert overlord_db._loop is asyncio.get_running_loop()
    assert id(overlord_db) not in seen["module"] | seen["class"]

"""overlord_db follows the test's event loop, whatever its scope.

The scopes are exercised in one pytest run of their own, so the checks that
span tests (one connection per module loop, say) run in a known order in one
process, never split across xdist workers.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

SCOPES = '''
import asyncio

import pytest

seen = {"module": [], "class": []}


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_first(overlord_db):
    seen["module"].append(overlord_db)
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('module-loop')")
    assert overlord_db._loop is asyncio.get_running_loop()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_second_reuses_connection(overlord_db):
    seen["module"].append(overlord_db)
    assert seen["module"][0] is seen["module"][1]  # one connection for the module's loop
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0


@pytest.mark.asyncio(loop_scope="class")
class TestClassLoop:
    async def test_one(self, overlord_db):
        seen["class"].append(overlord_db)
        assert overlord_db._loop is asyncio.get_running_loop()
        await overlord_db.execute("INSERT INTO tags (name) VALUES ('class-loop')")

    async def test_two(self, overlord_db):
        seen["class"].append(overlord_db)
        assert seen["class"][0] is seen["class"][1]
        assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop(overlord_db):
    assert overlord_db._loop is asyncio.get_running_loop()
    assert await overlord_db.fetchval("SELECT count(*) FROM tags") == 0


@pytest.mark.asyncio
async def test_function_loop_after_wider_ones(overlord_db):
    assert overlord_db._loop is asyncio.get_running_loop()
    assert all(overlord_db is not other for other in seen["module"] + seen["class"])
    assert len(seen["module"]) == 2 and len(seen["class"]) == 2  # the tests above ran first, in this process
'''


def test_each_loop_scope_gets_a_connection_of_its_own_loop(project):
    project.write("test_scopes.py", SCOPES)
    project.result("-q", "-p", "no:randomly", "test_scopes.py").assert_outcomes(passed=6)

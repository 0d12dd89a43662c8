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


USER_FIXTURES = '''
import asyncio

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def repo(overlord_db):
    """A user's fixture built on overlord_db: it awaits the connection in its own loop."""
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('from-fixture')")
    yield overlord_db


@pytest_asyncio.fixture(loop_scope="module")
async def module_repo(overlord_db):
    assert await overlord_db.fetchval("SELECT 1") == 1
    yield overlord_db


@pytest.mark.asyncio
async def test_default_loops(repo):
    assert repo._loop is asyncio.get_running_loop()
    assert await repo.fetchval("SELECT count(*) FROM tags") == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_with_a_module_loop_fixture(module_repo):
    assert module_repo._loop is asyncio.get_running_loop()
    assert await module_repo.fetchval("SELECT count(*) FROM tags") == 0
'''


@pytest.mark.parametrize("loop_scope", ["function", "session"])
def test_user_fixtures_built_on_overlord_db_share_its_loop(project, loop_scope):
    """With both default loop scopes set alike (function, or session as some projects do), a user's async
    fixture on top of overlord_db awaits it without "attached to a different loop"."""
    project.write("test_user_fixtures.py", USER_FIXTURES)
    result = project.result("-q", "-o", f"asyncio_default_fixture_loop_scope={loop_scope}",
                            "-o", f"asyncio_default_test_loop_scope={loop_scope}", "test_user_fixtures.py")
    result.assert_outcomes(passed=2)

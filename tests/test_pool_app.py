"""Acceptance: an application in the Robot Overlord API's style, tested UNCHANGED with overlord_pool.

The application keeps a module-global asyncpg pool (``db._pool``), its repositories call
``async with db._pool.acquire() as conn``, a service gathers repository calls, and one repository
function fails half-way. Its tests replace the pool with one ``monkeypatch.setattr`` line.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

APP = {
    "robot_api/__init__.py": "",
    "robot_api/db.py": '''
import os

import asyncpg

_pool = None


async def init_pool():
    global _pool
    _pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=10)


async def get_pool():
    if _pool is None:
        await init_pool()
    return _pool
''',
    "robot_api/repositories/__init__.py": "",
    "robot_api/repositories/users.py": '''
from robot_api import db


async def create_user(email, google_id, username):
    async with db._pool.acquire() as conn:
        return await conn.fetchval(
            "INSERT INTO users (email, google_id, username, role) VALUES ($1, $2, $3, 'citizen') RETURNING id",
            email, google_id, username)


async def get_user(user_id):
    async with db._pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def add_loyalty(user_id, points):
    async with db._pool.acquire() as conn:
        await conn.execute("UPDATE users SET loyalty_score = loyalty_score + $2 WHERE id = $1", user_id, points)


async def ban_and_reassign(user_id, moderator_id):
    """Bans a user, then moves their topics to a moderator: fails half-way when the moderator is unknown."""
    async with db._pool.acquire() as conn:
        await conn.execute("UPDATE users SET is_banned = TRUE WHERE id = $1", user_id)
        await conn.execute("UPDATE topics SET author_id = $2 WHERE author_id = $1", user_id, moderator_id)
''',
    "robot_api/repositories/topics.py": '''
from robot_api import db


async def create_topic(author_id, title):
    async with db._pool.acquire() as conn:
        return await conn.fetchval(
            "INSERT INTO topics (title, description, author_id, status) VALUES ($1, 'd', $2, 'pending_approval') RETURNING id",
            title, author_id)


async def count_by_author(author_id):
    pool = await db.get_pool()
    return await pool.fetchval("SELECT count(*) FROM topics WHERE author_id = $1", author_id)
''',
    "robot_api/services/__init__.py": "",
    "robot_api/services/profile.py": '''
import asyncio

from robot_api.repositories import topics, users


async def profile(user_id):
    user, topic_count = await asyncio.gather(users.get_user(user_id), topics.count_by_author(user_id))
    return {"username": user["username"], "loyalty": user["loyalty_score"], "topics": topic_count}


async def onboard(email, google_id, username, titles):
    user_id = await users.create_user(email, google_id, username)
    await asyncio.gather(*(topics.create_topic(user_id, t) for t in titles), users.add_loyalty(user_id, 5))
    return user_id
''',
}

TESTS = '''
import uuid

import asyncpg
import pytest

from robot_api import db
from robot_api.repositories import topics, users
from robot_api.services import profile


@pytest.fixture(autouse=True)
def app_pool(monkeypatch, overlord_pool):
    monkeypatch.setattr(db, "_pool", overlord_pool)


@pytest.mark.asyncio
async def test_onboarding_gathers_repository_calls():
    user_id = await profile.onboard("ada@x.io", "g-ada", "ada", ["robots", "rights", "rust"])
    assert await profile.profile(user_id) == {"username": "ada", "loyalty": 5, "topics": 3}


@pytest.mark.asyncio
async def test_the_next_test_starts_clean(overlord_db):
    assert await overlord_db.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.asyncio
async def test_a_repository_failing_half_way_leaves_nothing_and_earlier_work_stays(overlord_db):
    user_id = await profile.onboard("bob@x.io", "g-bob", "bob", ["bolts"])
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await users.ban_and_reassign(user_id, uuid.uuid4())
    row = await users.get_user(user_id)
    assert row["is_banned"] is False                      # the half-done ban was undone
    assert await topics.count_by_author(user_id) == 1     # the onboarding before it stays
    assert overlord_db.is_in_transaction()


@pytest.mark.asyncio
async def test_get_pool_returns_the_test_pool(overlord_pool):
    assert await db.get_pool() is overlord_pool


@pytest.mark.asyncio
async def test_a_pool_argument_takes_the_fixture_directly(overlord_pool):
    async def count_tags(pool):
        return await pool.fetchval("SELECT count(*) FROM tags")
    await overlord_pool.execute("INSERT INTO tags (name) VALUES ('robots')")
    assert await count_tags(overlord_pool) == 1
'''


def test_the_application_runs_unchanged_on_overlord_pool(project):
    for path, text in APP.items():
        project.write(path, text)
    original = {path: (project.root / path).read_text() for path in APP}
    project.write("tests/test_app.py", TESTS)
    project.env["PYTHONPATH"] = str(project.root)
    # No DATABASE_URL anywhere: a test reaching the application's own pool would fail to connect.
    project.result("-q", "tests").assert_outcomes(passed=5)
    assert {path: (project.root / path).read_text() for path in APP} == original
    assert not project.server_processes()

import pytest

async def _noop(): pass

@pytest.mark.asyncio
async def test_async(overlord_db):
    assert await overlord_db.fetchval("select count(*) from users") == 0
    await overlord_db.execute("insert into users(email, google_id, username, role) values ('a@b','g','a','citizen')")

@pytest.mark.asyncio
async def test_async2(overlord_db):
    assert await overlord_db.fetchval("select count(*) from users") == 0

def test_sync(overlord_db_sync):
    cur = overlord_db_sync.cursor(); cur.execute("select count(*) from users"); assert cur.fetchone()[0] == 0

def test_fresh(overlord_fresh_db, overlord_server):
    print(overlord_fresh_db, overlord_server)

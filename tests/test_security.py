"""Nobody else gets in: private folders and sockets, no shell, no permissions changed that are not ours.

Tests that need a second OS user create one when running as root and skip otherwise.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from pytest_overlord_db.errors import ServerError
from pytest_overlord_db.servers.embedded import EmbeddedServer
from pytest_overlord_db.servers.private import make_private

BASE = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path("/tmp")
INTRUDER = "ovl_intruder"


@pytest.fixture
def place(tmp_path):
    """A fresh folder name on the RAM disk; whatever the test made there is removed afterwards."""
    made: list[EmbeddedServer] = []
    root = BASE / f"ovl-sec-{uuid.uuid4().hex[:8]}"
    yield root, made
    for server in made:
        server.stop()
        if server.socket_dir() != server.datadir:
            shutil.rmtree(server.socket_dir(), ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def intruder() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second OS user")
    if subprocess.run(["id", INTRUDER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER], check=True)
    return INTRUDER


def can_connect_as(user: str, path: str) -> str:
    """Try the unix socket as ``user`` (a tiny system-python program, so no venv access is needed)."""
    code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1]); print('CONNECTED')\n"
            "except OSError as e:\n    print(type(e).__name__)\n")
    done = subprocess.run(["/usr/bin/python3", "-c", code, path], user=user, capture_output=True, text=True, timeout=30, cwd="/")
    return done.stdout.strip() or done.stderr.strip()


@pytest.mark.parametrize("long_path", [False, True], ids=["socket-in-datadir", "short-socket-folder"])
def test_another_local_user_cannot_reach_the_server(place, long_path):
    root, made = place
    datadir = root / ("x" * 90 if long_path else "data")
    server = EmbeddedServer(datadir)
    made.append(server)
    url = server.start()
    sock = server.socket_dir() / ".s.PGSQL.5432"
    assert sock.exists() and (server.socket_dir() != datadir) == long_path
    for folder in {server.socket_dir(), datadir}:
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700, folder
    assert stat.S_IMODE(os.lstat(sock).st_mode) & 0o077 == 0
    conn = psycopg2.connect(url)  # we still can
    conn.close()
    assert can_connect_as(intruder(), str(sock)) == "PermissionError"


def test_a_symlink_in_place_of_the_socket_folder_is_refused_and_its_target_untouched(place, tmp_path):
    root, made = place
    server = EmbeddedServer(root / ("y" * 90))
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.symlink(target, server.socket_dir())
    try:
        with pytest.raises(ServerError, match="is a symbolic link"):
            server.start()
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
        assert list(target.iterdir()) == []
    finally:
        os.unlink(server.socket_dir())


def test_a_folder_of_another_user_is_refused(place):
    root, made = place
    user = intruder()
    import pwd

    root.mkdir(mode=0o700)
    os.chown(root, pwd.getpwnam(user).pw_uid, -1)
    with pytest.raises(ServerError, match=r"belongs to uid \d+, not to"):
        EmbeddedServer(root).start()
    assert pwd.getpwuid(os.lstat(root).st_uid).pw_name == user


def test_an_existing_folder_open_to_others_is_refused_not_chmodded(place):
    root, _ = place
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    with pytest.raises(ServerError, match=r"open to other users \(mode 755\)"):
        make_private(root)
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o755


def test_no_permission_is_changed_on_folders_we_did_not_create(place):
    """Run as root, the server's own OS user must pass through the parents: a closed parent is an error
    naming it, never a chmod (the old fallback turned $HOME into 0755)."""
    root, _ = place
    intruder()  # root only
    root.mkdir(mode=0o700)
    os.chmod(root, 0o700)
    with pytest.raises(ServerError, match=rf"cannot pass through {root}"):
        EmbeddedServer(root / "data").start()
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o700


@pytest.mark.parametrize("name", [
    "$(touch PWNED)", "`touch PWNED`", "it's", 'say "hi"', "a+b&c#d%e", "with space", "naïve-Ωmega",
])
def test_hostile_folder_names_start_the_server_without_a_shell(place, name):
    root, made = place
    datadir = root / name / "data"
    server = EmbeddedServer(datadir)
    made.append(server)
    conn = psycopg2.connect(server.start())
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    assert not list(Path("/").glob("PWNED")) and not list(root.rglob("PWNED")) and not (datadir / "pgdata" / "PWNED").exists()


def test_a_newline_in_the_folder_name_works(place):
    """postgresql.conf cannot hold a line break, so the socket goes to the short private folder."""
    root, made = place
    server = EmbeddedServer(root / "line\nbreak")
    made.append(server)
    conn = psycopg2.connect(server.start())
    conn.close()
    assert server.socket_dir() != server.datadir


def test_an_unusable_data_folder_is_one_paragraph(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ServerError, match=r"cannot use .*a-file.*--overlord-datadir"):
        EmbeddedServer(blocker / "data").start()


@pytest.mark.slow
def test_a_role_that_cannot_create_the_extensions_is_told_what_to_do(project, overlord_server):
    """CREATEDB but not superuser, and vector is not a trusted extension: one paragraph up front."""
    import psycopg2

    role = f"ovl_limited_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(overlord_server.admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN CREATEDB")
    try:
        limited = overlord_server.admin_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
        result = project.run("-q", f"--overlord-db-url={limited}", "test_it.py")
        out = result.stdout + result.stderr
        assert result.returncode != 0
        assert "cannot create extension(s) vector" in out and "template1" in out, out
        assert "Traceback" not in out
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE {role}")
        admin.close()


@pytest.mark.slow
def test_a_stale_database_this_role_cannot_drop_is_left_with_a_warning(project):
    """A marked database of a dead run, made by another role: the run goes on and says what to do."""
    import json
    import socket

    import psycopg2

    from pytest_overlord_db.config import resolve
    from pytest_overlord_db.template import MARK, project_id

    server = EmbeddedServer(project.datadir)
    admin_url = server.start()
    try:
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        stale = f"ovl_{project_id(resolve(project.root))}_w_abcdef_dead9999_1"
        mark = {"by": MARK, "kind": "work", "project": project_id(resolve(project.root)), "host": socket.gethostname(),
                "run": "dead9999", "pid": 12345}  # no session holds this run's lease: it is dead
        with admin.cursor() as cur:
            cur.execute("CREATE ROLE limited LOGIN CREATEDB")
            cur.execute(f"CREATE DATABASE {stale}")  # owned by postgres
            cur.execute(f"COMMENT ON DATABASE {stale} IS %s", (json.dumps(mark),))
        template1 = psycopg2.connect(admin_url.replace("/postgres?", "/template1?", 1))
        template1.autocommit = True
        with template1.cursor() as cur:
            cur.execute("CREATE EXTENSION vector")  # as the paragraph for this role advises
        template1.close()

        limited = admin_url.replace("postgresql://postgres@", "postgresql://limited@", 1)
        project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
        result = project.run("-q", f"--overlord-db-url={limited}", "test_it.py")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert f"left the stale database {stale} alone" in out and "DROP DATABASE" in out, out
        assert "Traceback" not in out
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (stale,))
            assert cur.fetchone() == (1,)  # not ours to drop
        admin.close()
    finally:
        server.stop()


def test_another_local_user_cannot_reach_the_relay(empty_db_url):
    """The relay joins clients to already authenticated backends: its folder is the only lock."""
    from pytest_overlord_db import urls
    from pytest_overlord_db.connections.relay import Relay

    parts = urls.dsn_parts(empty_db_url)
    relay = Relay(f"{parts['host']}/.s.PGSQL.{parts['port']}")
    relay.start()
    try:
        assert stat.S_IMODE(os.lstat(os.path.dirname(relay.path)).st_mode) == 0o700
        assert can_connect_as(intruder(), relay.path) == "PermissionError"
    finally:
        relay.close()


def test_files_written_by_processes_at_once_are_whole_private_and_leave_no_temporary(tmp_path):
    # Two xdist workers starting the same server wrote its marker through one shared temporary name: one
    # renamed the other's file away, and that worker failed with "No such file or directory".
    # New interpreters, not forked ones: a fork of this process (its relay and pool threads) can inherit a
    # lock some thread held at that moment and hang for ever (it did, once, in a CI run).
    from pytest_overlord_db.servers.private import replace_file

    folder, go = tmp_path / "files", tmp_path / "go"
    folder.mkdir()
    target = folder / "clients.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_MANY, str(target), str(n), str(go)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for n in range(4)]
    time.sleep(0.5)  # all four started and waiting: they then write at once
    go.touch()
    outputs = [w.communicate(timeout=60)[0] for w in writers]
    assert [w.returncode for w in writers] == [0] * 4, outputs
    assert target.read_text() in {f"writer {n}\n" * 50 for n in range(4)}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == ["clients.json"]
    replace_file(target, "last")
    assert target.read_text() == "last"


WRITE_MANY = """
import sys
from pathlib import Path
from pytest_overlord_db.servers.private import replace_file
target, n, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    pass
for _ in range(300):
    replace_file(target, f"writer {n}\\n" * 50)
"""


def test_workers_creating_the_server_user_at_once_agree_on_its_uid(tmp_path):
    """On a fresh machine every xdist worker finds the server's OS user missing; two useradds at once both
    succeed here, the second giving the user the next uid, and the first worker's data folder then belongs
    to nobody. Run with a user of its own so the real one is untouched."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create OS users")
    name = f"ovl_race_{uuid.uuid4().hex[:6]}"
    go = tmp_path / "go"
    code = ("import os, sys, time\nfrom pytest_overlord_db.servers import embedded\nembedded.SYSTEM_USER = sys.argv[1]\n"
            "while not os.path.exists(sys.argv[2]):\n    time.sleep(0.001)\nprint(embedded._server_user()[1][0])\n")
    workers = [subprocess.Popen([sys.executable, "-c", code, name, str(go)], stdout=subprocess.PIPE, text=True)
               for _ in range(3)]
    try:
        time.sleep(1.0)  # all three are past their imports and waiting
        go.touch()
        uids = {int(w.communicate(timeout=60)[0]) for w in workers}
        import pwd

        assert uids == {pwd.getpwnam(name).pw_uid}
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def test_a_folder_another_worker_just_made_is_waited_for_until_it_changes_hands(place, monkeypatch):
    # Under root, a worker makes the data folder, then hands it to the server's OS user; a second worker
    # starting at that moment found it root's and refused it ("belongs to uid 0"), failing every test (seen in CI).
    if os.geteuid() != 0:
        pytest.skip("needs root: only then does the folder change hands")
    import threading

    from pytest_overlord_db.servers import embedded, private

    root, _ = place
    owner = embedded._server_user()[1]
    root.mkdir(mode=0o700)  # the other worker's mkdir, its chown still to come
    handover = threading.Timer(0.2, os.chown, (root, *owner))
    handover.start()
    try:
        assert make_private(root, owner) == root and os.lstat(root).st_uid == owner[0]
    finally:
        handover.join()
    left = root.parent / f"{root.name}-left"  # made and never handed over: refused once the wait is over
    left.mkdir(mode=0o700)
    monkeypatch.setattr(private, "HANDOVER_WAIT", 0.05)
    try:
        with pytest.raises(ServerError, match=r"belongs to uid 0, not to the server's OS user"):
            make_private(left, owner)
    finally:
        left.rmdir()

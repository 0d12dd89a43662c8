"""Cache housekeeping: `overlord-db cache list|clear` and the automatic removal of idle data folders.

Real embedded servers in real folders. The places searched are pointed at a folder of the test's own
(the default ones, /dev/shm and the temp folder, hold other projects' caches on a shared machine).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pytest_overlord_db.cli import app
from pytest_overlord_db.servers import EmbeddedServer, datadirs


@pytest.fixture
def places(project, monkeypatch):
    """A folder standing for /dev/shm (on /dev/shm, where the server's own OS user can reach it under root)."""
    base = project.datadir
    base.mkdir(mode=0o711)
    monkeypatch.setattr(datadirs, "roots", lambda: [base])
    monkeypatch.setattr(datadirs, "cache_root", lambda: base / "no-cache-here")
    monkeypatch.chdir(project.root)
    monkeypatch.delenv("OVERLORD_DATADIR", raising=False)
    return base


def cli(*args: str, **env: str):
    return CliRunner().invoke(app, ["cache", *args], env={"COLUMNS": "200", **env})


def test_list_and_clear_touch_only_our_idle_folders(places, project):
    running = EmbeddedServer(places / "ovl-0-running-1234abcd", project.root)
    idle = EmbeddedServer(places / "ovl-0-idle-1234abcd", Path("/somewhere/else"))
    theirs = places / "ovl-0-theirs-1234abcd"  # our kind of name, but no marker and no cluster: not ours
    (theirs / "pgdata").mkdir(parents=True)
    legacy = places / "ovl-0-legacy-5678abcd"  # made before markers: our name and a cluster
    (legacy / "pgdata").mkdir(parents=True)
    (legacy / "pgdata" / "PG_VERSION").write_text("18\n")
    idle.start()
    idle.stop()
    running.start()
    try:
        listed = cli("list", "--format", "json")
        assert listed.exit_code == 0, listed.output
        folders = {Path(f["path"]).name: f for f in json.loads(listed.stdout)["folders"]}
        assert set(folders) == {"ovl-0-running-1234abcd", "ovl-0-idle-1234abcd", "ovl-0-legacy-5678abcd"}
        assert folders["ovl-0-running-1234abcd"]["running"] and not folders["ovl-0-idle-1234abcd"]["running"]
        assert folders["ovl-0-idle-1234abcd"]["project"] == "/somewhere/else"
        assert folders["ovl-0-idle-1234abcd"]["bytes"] > 10_000_000  # a real cluster
        text = cli("list")
        assert "3 data folder(s)" in text.output and "running, project" in text.output

        dry = cli("clear", "--all", "--dry-run")
        assert dry.exit_code == 0 and idle.datadir.exists() and "would remove" in dry.output
        cleared = cli("clear", "--all")
        assert cleared.exit_code == 0, cleared.output
        assert f"left alone  {running.datadir}: its server is running" in cleared.output
        assert not idle.datadir.exists() and not legacy.exists()
        assert theirs.exists() and running.datadir.exists()

        this = cli("clear", OVERLORD_DATADIR=str(running.datadir))  # this project's folder, still in use
        assert this.exit_code == 1 and "its server is running" in this.output
    finally:
        running.stop()
    assert not project.server_processes()
    done = cli("clear", OVERLORD_DATADIR=str(running.datadir))
    assert done.exit_code == 0 and f"removed  {running.datadir}" in done.output and not running.datadir.exists()


def test_a_folder_we_did_not_create_is_never_removed(places):
    server = EmbeddedServer(places / "mine")
    server.datadir.mkdir(mode=0o700)  # the user made it and pointed the plugin at it
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("embedded_postgres")
        os.chown(server.datadir, entry.pw_uid, entry.pw_gid)
    server.start()
    server.stop()
    assert not datadirs.is_ours(server.datadir)
    assert datadirs.remove(server.datadir) == "not made by pytest-overlord-db" and server.datadir.exists()
    # A link named like ours, to a folder that is ours: never followed.
    ours = places / "ovl-0-target-1234abcd"
    ours.mkdir()
    datadirs.write_marker(ours, None, created=True)
    link = places / "ovl-0-link-1234abcd"
    link.symlink_to(ours)
    assert [d.path for d in datadirs.find()] == [ours]
    assert datadirs.remove(link) == "not made by pytest-overlord-db" and (ours / datadirs.MARKER).exists()


USES_A_SERVER = "def test_it(overlord_server):\n    pass\n"


def test_idle_folders_are_removed_when_a_server_starts(project):
    stale = project.datadir.with_name(project.datadir.name + "-stale")  # in /dev/shm, where the plugin looks
    stale.mkdir(mode=0o700)
    datadirs.write_marker(stale, Path("/old/project"), created=True)
    (stale / "clients.json").write_text("[]")
    long_ago = time.time() - 400 * 86400
    os.utime(stale / "clients.json", (long_ago, long_ago))
    project.write("tests/test_it.py", USES_A_SERVER)

    kept = project.result("-q", "tests", "--overlord-cache-max-age=0")  # 0: never
    kept.assert_outcomes(passed=1)
    assert stale.exists()
    # Only folders idle for more than a year: other projects' caches on this machine are younger.
    swept = project.result("-q", "tests", "--overlord-cache-max-age=365")
    swept.assert_outcomes(passed=1)
    assert not stale.exists()
    assert any(f"unused for over 365 day(s): {stale}" in line for line in swept.outlines), swept.outlines
    assert project.datadir.exists()  # its own folder is never swept


def test_a_bad_max_age_is_one_paragraph(project):
    project.write("tests/test_it.py", USES_A_SERVER)
    result = project.result("-q", "tests", "--overlord-cache-max-age=soon")
    assert result.ret == 4  # usage error
    assert "The cache's max age must be a number of days (0: never remove), not 'soon' (from command line)." in "\n".join(result.errlines)

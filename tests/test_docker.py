"""The Docker backend for real: a loopback-only engine and a locally built image (scripts/docker-engine.sh).

The script writes OVERLORD_TEST_DOCKER_HOST and OVERLORD_TEST_DOCKER_IMAGE into
its env file (.ci/run sources it); without them every test here skips with the
script's reason. Only these tests see the engine: each sets DOCKER_HOST for its
own runs, so the rest of the suite is not switched to Docker by ``auto``.
Containers run with the host's network (no bridge here), PostgreSQL on a free
127.0.0.1 port.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pytest_overlord_db.servers.containers import data_directory

ENGINE = os.environ.get("OVERLORD_TEST_DOCKER_HOST", "")
IMAGE = os.environ.get("OVERLORD_TEST_DOCKER_IMAGE", "")
WHY = os.environ.get("OVERLORD_TEST_DOCKER_UNAVAILABLE") or (
    "no Docker engine configured for the tests: run scripts/docker-engine.sh and source its env.sh")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (ENGINE and IMAGE), reason=WHY)]

FIXTURE_TESTS = '''
import pytest

def test_server(overlord_server):
    assert overlord_server.backend == "docker"
    assert overlord_server.version_num >= 180000
    assert overlord_server.datadir is None
    assert "@127.0.0.1:" in overlord_server.admin_url

@pytest.mark.asyncio
async def test_async(overlord_db):
    await overlord_db.execute("INSERT INTO tags (name) VALUES ('t1')")
    assert await overlord_db.fetchval("SELECT count(*) FROM users") == 5  # the development seed

def test_sync_is_clean(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT count(*) FROM tags")
    assert cur.fetchone()[0] == 0

def test_fresh(overlord_fresh_db):
    import psycopg2
    conn = psycopg2.connect(overlord_fresh_db.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO tags (name) VALUES ('committed')")
        cur.execute("SELECT count(*) FROM topics, current_setting('fsync') AS f WHERE f = 'off'")
        assert cur.fetchone()[0] == 3
    conn.close()
'''

SERVER_ID_TEST = '''
import os, pathlib

def test_{i}(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT inet_server_port(), pg_postmaster_start_time()")
    port, started = cur.fetchone()
    out = pathlib.Path(os.environ["SEEN"]) / f"{{os.getpid()}}-{i}"
    out.write_text(f"{{port}} {{started}}")
'''


def engine():
    import docker

    return docker.DockerClient(base_url=ENGINE, timeout=30)


def ours(project: Path, client=None) -> list:
    """The engine's containers started for ``project`` (whatever their state): other tests may run beside this one."""
    client = client or engine()
    return client.containers.list(all=True, filters={"label": f"dev.overlord-db.project={project}"})


@pytest.fixture
def docker_project(project):
    """A user project whose runs use the test engine (host network, the local image), nothing else."""
    project.env.update(DOCKER_HOST=ENGINE, OVERLORD_IMAGE=IMAGE, OVERLORD_DOCKER_NETWORK="host")
    yield project
    left = ours(project.root)
    for container in left:  # a failed test must not leave one behind for the next
        container.remove(force=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"


def test_auto_picks_docker_and_every_fixture_works_with_a_seed(docker_project):
    """No --overlord-backend: auto finds the engine (DOCKER_HOST) and takes it; template, seed, all fixtures."""
    docker_project.write("test_fixtures.py", FIXTURE_TESTS)
    result = docker_project.result("--seed=development", "test_fixtures.py")  # not -q: the header
    result.assert_outcomes(passed=4)
    out = "\n".join(result.outlines)
    assert "backend docker (auto: Docker answers); docker " + IMAGE + " (host network)" in out
    assert ours(docker_project.root) == []  # the last process out removed it


def test_xdist_workers_share_one_container(docker_project, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    docker_project.env["SEEN"] = str(seen)
    docker_project.write("test_ids.py", "\n".join(SERVER_ID_TEST.format(i=i) for i in range(8)))
    docker_project.result("-q", "-n", "2", "-p", "xdist", "--overlord-backend=docker", "test_ids.py").assert_outcomes(passed=8)
    files = list(seen.iterdir())
    assert len({f.name.split("-")[0] for f in files}) == 2, "both workers ran tests"
    assert len({f.read_text() for f in files}) == 1, "one server (port and start time) for the whole run"


def test_the_round_trip_runs_on_docker(docker_project):
    docker_project.write("test_nothing.py", "def test_nothing():\n    pass\n")
    docker_project.write("pyproject.toml", "".join(
        f'[[tool.overlord_db.accepted]]\nmigration = "0001.initial-schema"\nobject = "extension {name}"\nreason = "kept"\n'
        for name in ("citext", "vector")))
    result = docker_project.result("-q", "--overlord-backend=docker", "--overlord-roundtrip", "test_nothing.py")
    migrations = len(list((docker_project.root / "migrations").glob("0*")))
    assert result.ret == 0, "\n".join(result.outlines)
    result.assert_outcomes(passed=1 + migrations + 2)  # and the full cycle, and the declarations' check


def test_a_server_setting_reaches_the_container(docker_project):
    docker_project.write("test_mem.py", """
def test_mem(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT setting, source FROM pg_settings WHERE name = 'work_mem'")
    assert cur.fetchone() == ("5120", "command line")  # one more -c flag of the container's postgres
""")
    result = docker_project.result("-q", "--overlord-backend=docker", "--overlord-server-setting=work_mem=5MB", "test_mem.py")
    assert result.ret == 0, "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=1)
    refused = docker_project.result("-q", "--overlord-backend=docker", "--overlord-server-setting=nonesuch_setting=1", "test_mem.py")
    text = "\n".join(refused.outlines + refused.errlines)
    assert refused.ret == 4, text
    assert (f"--overlord-server-setting=nonesuch_setting=1: PostgreSQL in {IMAGE} refuses it, so it did not start: "
            'unrecognized configuration parameter "nonesuch_setting".') in text, text
    assert "Traceback" not in text


def test_a_killed_runs_container_is_removed_by_the_next_run(docker_project, tmp_path):
    marker = tmp_path / "started"
    docker_project.env["MARKER"] = str(marker)
    docker_project.write("test_hang.py", '''
import os, pathlib, time

def test_hang(overlord_db_sync):
    pathlib.Path(os.environ["MARKER"]).write_text("x")
    time.sleep(120)
''')
    victim = docker_project.popen("-q", "--overlord-backend=docker", "test_hang.py")
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), victim.stdout.read() if victim.poll() is not None else "the test never started"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    left = ours(docker_project.root)
    assert len(left) == 1 and left[0].status == "running"
    assert left[0].labels["dev.overlord-db.owner-pid"] == str(victim.pid)
    assert left[0].labels["dev.overlord-db.project"] == str(docker_project.root)

    # Another project (another state folder): it finds the container by its labels, its owner dead.
    docker_project.datadir = Path(f"{docker_project.datadir}-other")
    docker_project.write("test_ok.py", "def test_ok(overlord_db_sync):\n    pass\n")
    docker_project.result("-q", "--overlord-backend=docker", "test_ok.py").assert_outcomes(passed=1)
    assert ours(docker_project.root) == []


def test_a_container_that_cannot_start_is_removed_and_named(monkeypatch, tmp_path):
    """An image whose entrypoint is missing: create succeeds, start fails; nothing is left ``Created``."""
    import io

    from pytest_overlord_db.errors import ServerError
    from pytest_overlord_db.servers.docker import DockerServer

    client = engine()
    broken = "overlord-test/broken:latest"
    client.images.build(fileobj=io.BytesIO(f'FROM {IMAGE}\nENTRYPOINT ["/no/such/entrypoint"]\n'.encode()), tag=broken, rm=True)
    monkeypatch.setenv("DOCKER_HOST", ENGINE)
    try:
        server = DockerServer(broken, "host", tmp_path / "state", str(tmp_path))
        with pytest.raises(ServerError) as failure:
            server.start()
        assert f"Could not start a container of Docker image {broken}:" in str(failure.value)
        assert "/no/such/entrypoint" in str(failure.value)
        assert ours(tmp_path, client) == []
    finally:
        client.images.remove(broken, force=True)


def test_an_engine_without_a_bridge_names_the_host_network_option(monkeypatch, tmp_path):
    from pytest_overlord_db.errors import ServerError
    from pytest_overlord_db.servers.docker import DockerServer

    if engine().networks.list(names=["bridge"]):
        pytest.skip("this engine has a bridge network: it publishes the port")
    monkeypatch.setenv("DOCKER_HOST", ENGINE)
    with pytest.raises(ServerError) as failure:
        DockerServer(IMAGE, "default", tmp_path / "state", str(tmp_path)).start()
    assert str(failure.value).startswith(f"The Docker engine started a container of {IMAGE} but published no port for its "
                                         "PostgreSQL (network mode 'default';"), failure.value
    assert "Use --overlord-docker-network=host" in str(failure.value)
    assert ours(tmp_path) == []


def test_an_image_that_cannot_be_pulled_is_one_paragraph(monkeypatch, tmp_path):
    # A registry on a closed loopback port: the pull fails at once and nothing leaves this machine.
    from pytest_overlord_db.errors import ServerError
    from pytest_overlord_db.servers.docker import DockerServer

    monkeypatch.setenv("DOCKER_HOST", ENGINE)
    with pytest.raises(ServerError) as failure:
        DockerServer("127.0.0.1:9/overlord/absent:1", "host", tmp_path / "state", str(tmp_path)).start()
    assert str(failure.value).startswith("Docker image 127.0.0.1:9/overlord/absent:1 is not on the engine and could not be pulled (")
    assert "--overlord-image" in str(failure.value)
    assert ours(tmp_path) == []


REUSE_TEST = '''
def test_report(overlord_server):
    print("TEMPLATE", overlord_server.template, "REUSED", overlord_server.template_reused, "AT", overlord_server.admin_url)
'''


def test_a_reused_container_keeps_its_template_between_runs_and_stops_when_idle(docker_project):
    import re

    docker_project.write("test_report.py", REUSE_TEST)
    docker_project.env["OVERLORD_REUSE_IDLE"] = "10m"  # the second run must find it however loaded the machine is
    runs = [docker_project.run("-q", "-s", "--overlord-backend=docker", "--overlord-reuse-container", "test_report.py")
            for _ in range(2)]
    seen = [re.findall(r"TEMPLATE (\S+) REUSED (\w+) AT (\S+)", run.stdout) for run in runs]
    assert all(run.returncode == 0 for run in runs), [run.stdout + run.stderr for run in runs]
    (first,), (second,) = seen
    assert first[1] == "False" and second[1] == "True" and first[0] == second[0]
    assert first[2] == second[2]  # the same server (the URL has the same port; its password is masked)
    kept = ours(docker_project.root)
    assert len(kept) == 1 and kept[0].status == "running" and kept[0].labels["dev.overlord-db.reuse"] == "1"
    # Its cluster is on a tmpfs at the image's own PGDATA (what the entrypoint initialises).
    pgdata = data_directory(engine().images.get(IMAGE))
    assert pgdata.startswith("/var/lib/postgresql") and kept[0].attrs["HostConfig"]["Tmpfs"] == {pgdata: "rw,mode=0700"}

    # The last run's idle time counts: a third, with 2 s, joins it and leaves it to stop soon after.
    docker_project.env["OVERLORD_REUSE_IDLE"] = "2"
    docker_project.result("-q", "--overlord-backend=docker", "--overlord-reuse-container", "test_report.py").assert_outcomes(passed=1)
    assert [c.id for c in ours(docker_project.root)] == [kept[0].id]
    deadline = time.monotonic() + 30
    while kept[0].status == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        kept[0].reload()
    assert kept[0].status == "exited", "the idle container did not stop itself"
    # A run without reuse replaces it and removes its own at the end.
    docker_project.result("-q", "--overlord-backend=docker", "test_report.py").assert_outcomes(passed=1)
    assert ours(docker_project.root) == []


def test_cache_clear_removes_the_kept_container(docker_project, monkeypatch):
    from typer.testing import CliRunner

    from pytest_overlord_db import cli

    docker_project.write("test_report.py", REUSE_TEST)
    docker_project.result("-q", "--overlord-backend=docker", "--overlord-reuse-container", "test_report.py").assert_outcomes(passed=1)
    (kept,) = ours(docker_project.root)
    monkeypatch.chdir(docker_project.root)
    env = {"DOCKER_HOST": ENGINE, "OVERLORD_DATADIR": str(docker_project.datadir)}
    dry = CliRunner().invoke(cli.app, ["cache", "clear", "--dry-run"], env=env)
    assert f"would remove  container {kept.short_id} (project {docker_project.root})" in dry.output, dry.output
    assert len(ours(docker_project.root)) == 1
    done = CliRunner().invoke(cli.app, ["cache", "clear"], env=env)
    assert f"removed  container {kept.short_id}" in done.output, done.output
    assert ours(docker_project.root) == []

"""Pure logic, no server: URLs, settings, yoyo.ini, backend choice, the Docker backend's pieces."""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_overlord_db import urls
from pytest_overlord_db.config import YoyoIni, read_accepted, resolve, seed_files
from pytest_overlord_db.errors import ConfigError
from pytest_overlord_db.migrators import for_folder
from pytest_overlord_db.servers import choose_backend, docker_available, make_server
from pytest_overlord_db.servers.docker import DockerServer, container_command
from pytest_overlord_db.servers.embedded import EmbeddedServer, default_datadir
from pytest_overlord_db.servers.external import ExternalServer

REPO = Path(__file__).resolve().parent.parent
password_chars = st.text(alphabet=st.characters(blacklist_characters="@/?#[]:%", blacklist_categories=("Cs", "Cc")), min_size=3, max_size=30)


@given(password=password_chars, user=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
def test_mask_never_shows_the_password(password, user):
    url = f"postgresql+psycopg2://{user}:{password}@db.example.com:5432/app"
    masked = urls.mask(url)
    assert f"{user}:***@db.example.com:5432/app" in masked
    assert password not in masked.replace(f"{user}:", "", 1).replace("db.example.com:5432/app", "").replace("postgresql+psycopg2://", "")


def test_mask_query_password_and_text():
    assert urls.mask("postgresql://h/db?user=u&password=secret") == "postgresql://h/db?user=u&password=***"
    assert urls.mask_text('FATAL: password authentication failed for "u" (pw s3cret)', "postgresql://u:s3cret@h/db").count("s3cret") == 0


def test_normalize_schemes():
    assert urls.normalize("postgresql+psycopg2://u:p@h:1/d") == "postgresql://u:p@h:1/d"
    assert urls.normalize("postgres://h/d") == "postgresql://h/d"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        urls.normalize("mysql://u:pw@h/d")


def test_dsn_parts_of_a_socket_url():
    parts = urls.dsn_parts("postgresql://postgres@/ovl_x?host=/dev/shm/data")
    assert parts == {"host": "/dev/shm/data", "port": 5432, "user": "postgres", "password": None, "dbname": "ovl_x"}
    assert urls.with_database("postgresql://u@h:5/a?x=1", "b") == "postgresql://u@h:5/b?x=1"


def test_yoyo_ini_sections_and_variables(tmp_path):
    ini = tmp_path / "yoyo.ini"
    ini.write_text("[DEFAULT]\ndatabase = postgresql://d/default\nmigrations = db/migrations\n\n"
                   "[production]\ndatabase = ${PROD_URL}\n\n[here]\nmigrations = %(here)s/other\n")
    parsed = YoyoIni(ini, environ={"PROD_URL": "postgresql://p/prod"})
    assert parsed.get("database") == "postgresql://d/default"
    assert parsed.get("database", "production") == "postgresql://p/prod"
    assert parsed.migrations_dir() == (tmp_path / "db" / "migrations", "migrations")
    assert parsed.migrations_dir("here") == (tmp_path / "other", "migrations")
    with pytest.raises(ConfigError, match=r"\$\{PROD_URL\}, but the environment variable PROD_URL is not set"):
        YoyoIni(ini, environ={}).get("database", "production")
    with pytest.raises(ConfigError, match=r"no \[staging\] section.*DEFAULT, production, here"):
        parsed.get("database", "staging")


def test_our_yoyo_ini_reads_as_the_seed_says():
    parsed = YoyoIni(REPO / "yoyo.ini", environ={"DATABASE_URL": "postgresql://x/prod"})
    assert parsed.get("database", "development").endswith("/robotoverlord_dev")
    assert parsed.get("database", "production") == "postgresql://x/prod"
    assert parsed.migrations_dir() == (REPO / "migrations", "migrations")
    assert parsed.get("batch_mode") == "on"


def test_yoyo_ini_inherit_include_and_here_per_file(tmp_path):
    """yoyo's own %inherit / %include: inherited values are overridden, included ones override;
    %(here)s is the folder of the file the value is written in; ? marks an optional file."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.ini").write_text("[DEFAULT]\nsources = %(here)s/common\nbatch_mode = off\nverbosity = 1\n")
    (tmp_path / "local.ini").write_text("[DEFAULT]\nverbosity = 3\n")
    ini = tmp_path / "yoyo.ini"
    ini.write_text("[DEFAULT]\n%inherit = shared/base.ini\n%include = local.ini ?missing.ini\nbatch_mode = on\nverbosity = 2\n")
    parsed = YoyoIni(ini, environ={})
    assert parsed.migrations_dir() == (tmp_path / "shared" / "common", "sources")
    assert (parsed.get("batch_mode"), parsed.get("verbosity")) == ("on", "3")
    ini.write_text("[DEFAULT]\n%include = nowhere.ini\n")
    with pytest.raises(ConfigError, match=r"%include names .*nowhere\.ini, which does not exist"):
        YoyoIni(ini, environ={})


def test_yoyo_ini_sources_with_a_space_in_the_path(tmp_path):
    folder = tmp_path / "my project" / "migrations"
    folder.mkdir(parents=True)
    ini = tmp_path / "my project" / "yoyo.ini"
    ini.write_text("[DEFAULT]\nsources = %(here)s/migrations\n")
    assert YoyoIni(ini, environ={}).migrations_dir() == (folder, "sources")
    s = resolve(tmp_path / "my project", environ={})
    assert s.migrations_dir == folder and s.sources["migrations_dir"].endswith("[DEFAULT] sources")


def test_resolve_precedence_and_errors(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "seeds" / "dev").mkdir(parents=True)
    (tmp_path / "seeds" / "dev" / "b.sql").write_text("SELECT 1")
    (tmp_path / "seeds" / "dev" / "a.sql").write_text("SELECT 1")
    s = resolve(tmp_path, environ={"OVERLORD_BACKEND": "embedded", "OVERLORD_DB_URL": "postgresql://h/d"})
    assert s.backend == "embedded" and s.db_url == "postgresql://h/d"
    assert resolve(tmp_path, backend="url", environ={"OVERLORD_DB_URL": "postgresql://h/d"}).backend == "url"
    assert [p.name for p in seed_files(tmp_path / "seeds", "dev")] == ["a.sql", "b.sql"]
    with pytest.raises(ConfigError, match="Unknown seed environment 'prod'.*exist: dev"):
        resolve(tmp_path, seed="prod", environ={})
    with pytest.raises(ConfigError, match="needs --overlord-db-url"):
        resolve(tmp_path, backend="url", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(tmp_path, migrations_dir="nope", environ={})


def test_every_value_says_where_it_came_from(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "yoyo.ini").write_text("[DEFAULT]\ndatabase = postgresql://u:topsecret@h/app\nmigrator = yoyo\n")
    s = resolve(tmp_path, backend="embedded", sources={"backend": "command line"},
                environ={"OVERLORD_IMAGE": "local/pg:18"})
    table = {name: (value, source) for name, value, source in s.describe()}
    assert table["backend"] == ("embedded", "command line")
    assert table["image"] == ("local/pg:18", "env OVERLORD_IMAGE")
    assert table["migrator"] == ("yoyo", f"{tmp_path / 'yoyo.ini'} [DEFAULT] migrator")
    assert table["database_url"] == ("postgresql://u:***@h/app", f"{tmp_path / 'yoyo.ini'} [DEFAULT] database")
    assert table["migrations_dir"] == (str(tmp_path / "migrations"), "default")
    assert "topsecret" not in repr(table) and "topsecret" not in repr(s) and "u:***@h/app" in repr(s)


def test_accepted_exceptions_from_both_places(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.overlord_db.accepted]]\nmigration = "0001.a"\nobject = "extension vector"\nreason = "shared"\n')
    (tmp_path / "yoyo.ini").write_text("[overlord_db:accepted]\n0002.b table public.Keep = on purpose\n")
    assert read_accepted(tmp_path, tmp_path / "yoyo.ini") == (
        {"migration": "0002.b", "object": "table public.Keep", "reason": "on purpose"},
        {"migration": "0001.a", "object": "extension vector", "reason": "shared"},
    )
    (tmp_path / "pyproject.toml").write_text('[[tool.overlord_db.accepted]]\nmigration = "0001.a"\n')
    with pytest.raises(ConfigError, match="lacks object, reason"):
        read_accepted(tmp_path)


def test_backend_choice(tmp_path, monkeypatch):
    (tmp_path / "migrations").mkdir()
    assert choose_backend(resolve(tmp_path, db_url="postgresql://h/d", environ={}))[0] == "url"
    assert choose_backend(resolve(tmp_path, backend="docker", environ={})) == ("docker", "chosen by option")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    backend, reason = choose_backend(resolve(tmp_path, environ={}))
    assert backend == "embedded" and reason.startswith("auto: Docker does not answer")
    assert isinstance(make_server(resolve(tmp_path, environ={}), "embedded"), EmbeddedServer)
    assert isinstance(make_server(resolve(tmp_path, environ={}), "docker"), DockerServer)
    assert isinstance(make_server(resolve(tmp_path, db_url="postgres://h/d", environ={}), "url"), ExternalServer)


def test_docker_backend_pieces_without_docker(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    if Path("/var/run/docker.sock").exists():
        pytest.skip("a Docker socket exists here")
    assert docker_available() == (False, "no DOCKER_HOST and no /var/run/docker.sock")
    assert container_command() == "postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    assert DockerServer("pgvector/pgvector:pg17").describe() == "docker pgvector/pgvector:pg17"


def test_docker_network_is_resolved_with_its_source(tmp_path):
    (tmp_path / "migrations").mkdir()
    settings = resolve(tmp_path, environ={})
    assert (settings.docker_network, settings.sources["docker_network"]) == ("default", "default")
    settings = resolve(tmp_path, environ={"OVERLORD_DOCKER_NETWORK": "Host"})
    assert (settings.docker_network, settings.sources["docker_network"]) == ("host", "env OVERLORD_DOCKER_NETWORK")
    with pytest.raises(ConfigError, match=r"--overlord-docker-network='bridge0' \(from option\) is not one of default, host"):
        resolve(tmp_path, environ={}, docker_network="bridge0")
    settings = resolve(tmp_path, environ={"OVERLORD_REUSE_CONTAINER": "on", "OVERLORD_REUSE_IDLE": "90"})
    assert (settings.reuse_container, settings.reuse_idle, settings.sources["reuse_container"]) == (
        True, 90.0, "env OVERLORD_REUSE_CONTAINER")
    assert resolve(tmp_path, environ={}).reuse_container is False
    assert resolve(tmp_path, environ={"OVERLORD_REUSE_IDLE": "15m"}).reuse_idle == 900.0
    with pytest.raises(ConfigError, match=r"container must be a duration such as .*, not 'soon' \(from env OVERLORD_REUSE_IDLE\)"):
        resolve(tmp_path, environ={"OVERLORD_REUSE_IDLE": "soon"})
    server = make_server(resolve(tmp_path, environ={}, docker_network="host", datadir=str(tmp_path / "d")), "docker")
    assert isinstance(server, DockerServer) and server.network == "host"
    assert server.state_dir == tmp_path / "d-docker" and server.describe().endswith("(host network)")


def test_a_containers_owner_is_dead_only_when_this_host_says_so():
    import subprocess

    from pytest_overlord_db.servers import containers

    mine = containers.owner_labels("/p", "/s")
    assert mine[containers.PROJECT] == "/p" and not containers.owner_dead(mine)
    assert not containers.owner_dead({**mine, containers.OWNER_HOST: "another-host", containers.OWNER_PID: "1"})
    assert containers.owner_dead({**mine, containers.OWNER_START: "1.000"})  # a new process with the old number
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    assert containers.owner_dead({**mine, containers.OWNER_PID: done.stdout.strip()})


def test_a_published_port_stays_on_loopback_for_a_local_engine(monkeypatch):
    from pytest_overlord_db.servers import containers

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert containers.published_host() == ("127.0.0.1", "127.0.0.1")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")
    assert containers.published_host() == ("127.0.0.1", "127.0.0.1")
    monkeypatch.setenv("DOCKER_HOST", "tcp://buildhost:2375")
    assert containers.published_host() == ("buildhost", "0.0.0.0")


def test_default_datadir_is_per_project(tmp_path):
    a, b = default_datadir(tmp_path / "one"), default_datadir(tmp_path / "two")
    assert a != b and a.parent == b.parent
    assert a.name.startswith(f"ovl-{os.getuid()}-one-")


def test_required_extensions_are_read_from_the_migrations():
    assert for_folder(REPO / "migrations").required_extensions() == {"citext", "vector"}


def test_default_datadir_avoids_a_small_dev_shm(tmp_path, monkeypatch):
    from pytest_overlord_db.servers import embedded

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded, "_free_bytes", lambda path: 64 * 1024 * 1024)
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 1000)
    assert default_datadir(tmp_path / "p").parent == tmp_path / "cache" / "pytest-overlord-db"
    # Under root the server runs as its own OS user, who cannot enter root's home: the temp folder instead.
    monkeypatch.setattr(embedded.os, "geteuid", lambda: 0)
    assert default_datadir(tmp_path / "p").parent == Path(tempfile.gettempdir())


def test_fixture_values_never_show_a_password_in_repr():
    from pytest_overlord_db.plugin import FreshDatabase
    from pytest_overlord_db.runtime import ServerInfo

    fresh = FreshDatabase(name="ovl_x", url="postgresql://robot:hunter2@db:5432/ovl_x")
    info = ServerInfo(backend="url", reason="", version="18.6", version_num=180006,
                      admin_url="postgresql://robot:hunter2@db:5432/postgres", template="ovl_t",
                      template_url="postgresql://robot:hunter2@db:5432/ovl_t", cache_key="k",
                      template_reused=True, build_seconds=0.0, start_seconds=0.1, datadir=None)
    for text in (repr(fresh), str(fresh), repr(info), str(info), repr([fresh, info])):
        assert "hunter2" not in text and "robot:***@db" in text
    assert fresh.dsn["password"] == "hunter2"  # still usable for connecting


def test_a_report_reads_back_from_its_json():
    from pytest_overlord_db.verdicts import FULL_CYCLE, SEEDED, Report, Verdict

    report = Report([Verdict("0001.a", seconds=0.25), Verdict("0002.b", "irreversible", "+ left behind: table public.b",
                                                               "Migration 0002.b ...", [{"object": "x", "reason": "y"}], 1.5)],
                    Verdict(FULL_CYCLE, "rollback_failed", error="boom"), [{"migration": "0003", "object": "o", "why": "w"}],
                    2.0, [{"table": "t", "migration": "0001.a", "why": "no rows"}], Verdict(SEEDED))
    again = Report.from_json(report.to_json())
    assert again == report and not again.ok
    assert Report.from_json(Report([Verdict("0001.a")], None, [], 0.5).to_json()).whole == []


def test_container_facts_read_from_docker_attrs():
    from types import SimpleNamespace

    from pytest_overlord_db.errors import ServerError
    from pytest_overlord_db.servers import containers

    def image(env, user=""):
        return SimpleNamespace(attrs={"Config": {"Env": env, "User": user}})

    assert containers.data_directory(image(["PATH=/bin", "PGDATA=/var/lib/postgresql/18/docker"])) == "/var/lib/postgresql/18/docker"
    assert containers.data_directory(image(["PATH=/bin"])) == containers.DEFAULT_PGDATA
    assert [containers._starts_as_root(image([], u)) for u in ("", "root", "0:0", "postgres", "999")] == [True, True, True, False, False]
    published = SimpleNamespace(attrs={"NetworkSettings": {"Ports": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}}})
    assert containers._published_port(published, "img") == 49153
    bare = SimpleNamespace(attrs={"NetworkSettings": {"Ports": {}}, "HostConfig": {"NetworkMode": "default"}})
    with pytest.raises(ServerError) as failure:
        containers._published_port(bare, "img")
    assert "published no port for its PostgreSQL (network mode 'default';" in str(failure.value)
    assert "--overlord-docker-network=host" in str(failure.value)


@pytest.mark.parametrize("version", [(3, 11, 7, "final", 0), (3, 11, 0, "final", 0), (3, 10, 4, "final", 0)])
def test_the_function_loop_fixture_finds_its_loop_without_a_warning(version, monkeypatch):
    """Under ``-W error``, on the versions whose get_event_loop() warns with a loop set and on the rest."""
    from pytest_overlord_db.plugin import loops

    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        monkeypatch.setattr(sys, "version_info", version)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert loops.current_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()

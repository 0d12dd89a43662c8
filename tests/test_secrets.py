"""Property: a password, whatever characters it holds and however it is written, never appears in what we show.

Every generated password carries a marker character (⁂) that none of our
messages use, so a leak of the password, or of any part of it around the
marker, is caught even when the rest of it is an ordinary word.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pytest_overlord_db import urls
from pytest_overlord_db.cli import app
from pytest_overlord_db.config import resolve
from pytest_overlord_db.errors import OverlordError
from pytest_overlord_db.servers.base import connect

MARK = "⁂"
printable = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
passwords = st.builds(lambda a, b: a + MARK + b, printable, printable)
written = st.sampled_from(["raw", "escaped", "query"])


def url_with(password: str, how: str, port: int = 1) -> str:
    if how == "raw":  # as people paste them: '#', '/', '@' and all
        return f"postgresql://robot:{password}@127.0.0.1:{port}/app"
    if how == "escaped":
        return f"postgresql://robot:{quote(password, safe='')}@127.0.0.1:{port}/app"
    return f"postgresql://robot@127.0.0.1:{port}/app?password={quote(password, safe='')}"


def assert_hidden(text: str, password: str) -> None:
    assert MARK not in text and quote(MARK) not in text and password not in text, text


@settings(max_examples=200, deadline=None)
@given(password=passwords, how=written)
def test_mask_and_mask_text(password, how):
    url = url_with(password, how)
    assert_hidden(urls.mask(url), password)
    assert_hidden(urls.mask_text(f"FATAL: bad login for {url} ({password}, {quote(password, safe='')})", url), password)


@settings(max_examples=40, deadline=None)
@given(password=passwords, how=written)
def test_driver_errors_are_scrubbed(password, how):
    url = url_with(password, how)  # port 1 on loopback: refused at once
    with pytest.raises(OverlordError) as failure:
        connect(url, connect_timeout=2)
    assert_hidden(str(failure.value), password)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords, how=written)
def test_settings_repr_and_cli_output(password, how, tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("proj")
    (root / "migrations").mkdir()
    url = url_with(password, how)
    assert_hidden(repr(resolve(root, db_url=url, database_url=url, environ={})), password)
    monkeypatch.chdir(root)
    for args in (["status"], ["status", "--format", "json"], ["migrate", "--dry-run"], ["rollback"]):
        result = CliRunner().invoke(app, [*args, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert_hidden(result.output, password)


@pytest.mark.slow
def test_header_errors_and_showlocals_tracebacks(project):
    """A whole pytest run against an unreachable server, with --showlocals --tb=long."""
    password = "p#ss/w@rd" + MARK + "'\"x"
    project.write("test_it.py", "def test_it(overlord_db_sync):\n    pass\n")
    result = project.run("-v", "--showlocals", "--tb=long", f"--overlord-db-url={url_with(password, 'raw')}", "test_it.py")
    assert result.returncode != 0
    assert_hidden(result.stdout + result.stderr, password)
    assert "robot:***@127.0.0.1:1/app" in result.stdout + result.stderr


def test_the_json_shape_masks_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("migrations").mkdir()
    password = "open" + MARK + "sesame"
    result = CliRunner().invoke(app, ["status", "--format", "json", "--database-url", url_with(password, "raw")])
    assert result.exit_code == 2
    assert_hidden(result.output, password)
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)  # an error is a paragraph on stderr, not half a JSON document

"""Settings of the migration fixtures and the cache: resolved in config.py, each with its source."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_overlord_db.config import resolve
from pytest_overlord_db.errors import ConfigError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "migrations").mkdir()
    return tmp_path


@pytest.mark.parametrize("word, expected", [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)])
def test_keep_failed_from_the_environment(root, word, expected):
    settings = resolve(root, environ={"OVERLORD_KEEP_FAILED": word})
    assert settings.keep_failed is expected
    assert settings.sources["keep_failed"] == "env OVERLORD_KEEP_FAILED"


def test_keep_failed_flag_wins_and_says_so(root):
    settings = resolve(root, environ={"OVERLORD_KEEP_FAILED": "no"}, sources={"keep_failed": "command line"}, keep_failed=True)
    assert settings.keep_failed is True and settings.sources["keep_failed"] == "command line"
    assert resolve(root, environ={}).keep_failed is False


def test_a_bad_keep_failed_names_its_source(root):
    with pytest.raises(ConfigError, match=r"keep-failed must be on or off .* not 'maybe' \(from env OVERLORD_KEEP_FAILED\)"):
        resolve(root, environ={"OVERLORD_KEEP_FAILED": "maybe"})

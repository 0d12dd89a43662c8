"""The pytest plugin (registered through the ``pytest11`` entry point).

hooks (options, configuration, header, xdist, round-trip collection),
fixtures (what tests use), items (round-trip checks), loops (the test's event
loop), errors (one paragraph per failure), state (what lives in
``config.stash``). The work itself is in ``isolation`` and ``runtime``,
which do not need pytest.
"""
from __future__ import annotations

from ..runtime import FreshDatabase, ServerInfo
from .fixtures import overlord_db, overlord_db_sync, overlord_fresh_db, overlord_server
from .hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_report_header,
    pytest_terminal_summary,
    pytest_unconfigure,
)
from .items import RoundtripItem
from .loops import pytest_fixture_setup

__all__ = [
    "FreshDatabase", "ServerInfo", "RoundtripItem",
    "overlord_db", "overlord_db_sync", "overlord_fresh_db", "overlord_server",
    "pytest_addoption", "pytest_collection_modifyitems", "pytest_configure", "pytest_configure_node",
    "pytest_report_header", "pytest_terminal_summary", "pytest_unconfigure", "pytest_fixture_setup",
]

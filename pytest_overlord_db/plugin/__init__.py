"""The pytest plugin (registered through the ``pytest11`` entry point).

hooks (options, configuration, header, xdist, round-trip collection),
fixtures (what tests use), app_fixtures (the shapes application code
expects: a pool, psycopg 3, SQLAlchemy), migration_fixtures (data-migration
tests and databases wider than a test), keep (--overlord-keep-failed), items
(round-trip checks), loops (the test's event
loop), errors (one paragraph per failure), state (what lives in
``config.stash``). The work itself is in ``isolation`` and ``runtime``,
which do not need pytest.
"""
from __future__ import annotations

from ..connections.pool import OverlordPool
from ..runtime import FreshDatabase, ServerInfo
from .app_fixtures import (
    _overlord_sqla_async_engines,
    overlord_pool,
    overlord_psycopg,
    overlord_psycopg_async,
    overlord_sqla_async_engine,
    overlord_sqla_async_session,
    overlord_sqla_engine,
    overlord_sqla_session,
)
from .fixtures import (
    _overlord_db_class_loop,
    _overlord_db_function_loop,
    _overlord_db_module_loop,
    _overlord_db_package_loop,
    _overlord_db_session_loop,
    _overlord_loop_class,
    _overlord_loop_module,
    _overlord_loop_package,
    _overlord_loop_session,
    overlord_db,
    overlord_db_sync,
    overlord_fresh_db,
    overlord_server,
)
from .hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_report_header,
    pytest_unconfigure,
)
from .items import RoundtripItem
from .keep import pytest_runtest_makereport, pytest_terminal_summary
from .migration_fixtures import FreshDatabases, overlord_fresh_db_factory, overlord_migrator, overlord_module_db

__all__ = [
    "FreshDatabase", "ServerInfo", "RoundtripItem", "OverlordPool", "overlord_pool", "overlord_psycopg",
    "overlord_psycopg_async", "overlord_sqla_engine", "overlord_sqla_session", "overlord_sqla_async_engine",
    "overlord_sqla_async_session", "_overlord_sqla_async_engines",
    "overlord_db", "overlord_db_sync", "overlord_fresh_db", "overlord_server", "_overlord_db_function_loop",
    "_overlord_db_class_loop", "_overlord_db_module_loop", "_overlord_db_package_loop", "_overlord_db_session_loop",
    "_overlord_loop_class", "_overlord_loop_module", "_overlord_loop_package", "_overlord_loop_session",
    "pytest_addoption", "pytest_collection_modifyitems", "pytest_configure", "pytest_configure_node",
    "pytest_report_header", "pytest_unconfigure",
    "FreshDatabases", "overlord_migrator", "overlord_fresh_db_factory", "overlord_module_db",
    "pytest_runtest_makereport", "pytest_terminal_summary",
]

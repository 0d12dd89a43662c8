"""Fixtures for data-migration tests and for committed databases wider than one test.

``overlord_migrator`` walks an empty database of its own along the chain;
``overlord_fresh_db_factory`` makes template clones for fixtures of any scope,
``overlord_module_db`` is one per module. All are dropped at the end of their
scope, or kept with ``--overlord-keep-failed`` (``keep``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from ..migrators import Migration
from ..runtime import FreshDatabase, Runtime, ServerInfo
from ..stepper import MigrationStepper
from . import errors, keep, state

CHAIN = pytest.StashKey[list[Migration]]()


def _runtime(request: pytest.FixtureRequest) -> Runtime:
    runtime, _ = errors.guarded(state.get(request.config).stack().ensure_runtime)
    return runtime


@pytest.fixture
def overlord_migrator(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> Iterator[MigrationStepper]:
    """An empty database of the test's own, moved along the migration chain by the test
    (``migrate_to``, ``migrate_up``, ``migrate_down``, ``rollback_to``); dropped afterwards.
    ``@pytest.mark.overlord_migrator(start=TARGET)`` has it migrated to TARGET before the test begins."""
    runtime = _runtime(request)
    settings = state.get(request.config).settings
    assert runtime.templates is not None
    templates = runtime.templates
    if CHAIN not in request.config.stash:  # reading the files costs milliseconds; they do not change mid-run
        request.config.stash[CHAIN] = errors.guarded(runtime.migrator.chain)
    chain = request.config.stash[CHAIN]
    stepper = errors.guarded(lambda: MigrationStepper(templates, runtime.migrator, settings.irreversible, chain))
    marker = request.node.get_closest_marker("overlord_migrator")
    try:
        start = marker.kwargs.get("start") if marker else None
        if start is not None:
            errors.guarded(lambda: stepper.migrate_to(start))
        yield stepper
    finally:
        stepper.close()
        failures = [request.node.nodeid] if keep.failed(request.node) else []
        if not keep.finish(request.config, runtime, stepper.name, stepper.url, failures):
            errors.guarded(lambda: runtime.drop_db(stepper.name))


class FreshDatabases:
    """What ``overlord_fresh_db_factory`` yields: ``with factory() as db:`` is a clone of the template,
    committed to at will, dropped when the block ends (whatever the scope of the fixture holding it)."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request

    @contextlib.contextmanager
    def __call__(self, *, used_by: str = "overlord_fresh_db_factory") -> Iterator[FreshDatabase]:
        config = self._request.config
        runtime = _runtime(self._request)
        db = errors.guarded(runtime.fresh_db)
        shared = keep.track(config, db.name, used_by)
        try:
            yield db
        finally:
            keep.untrack(config, shared)
            if not keep.finish(config, runtime, db.name, db.url, shared.failed):
                runtime.release_fresh_db(db)  # dropped (WITH FORCE) in the background

    def __repr__(self) -> str:
        return "FreshDatabases()"


@pytest.fixture(scope="session")
def overlord_fresh_db_factory(overlord_server: ServerInfo, request: pytest.FixtureRequest) -> FreshDatabases:
    """Clones of the template for fixtures of any scope: ``with overlord_fresh_db_factory() as db: yield db``."""
    return FreshDatabases(request)


@pytest.fixture(scope="module")
def overlord_module_db(overlord_fresh_db_factory: FreshDatabases) -> Iterator[FreshDatabase]:
    """One committed database for every test of a module, in the order they run; dropped after the module."""
    with overlord_fresh_db_factory(used_by="overlord_module_db") as db:
        yield db

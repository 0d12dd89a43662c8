"""``--overlord-keep-failed``: the databases of failed tests are kept, and their masked URLs reported.

A test's own database (``overlord_fresh_db``, ``overlord_migrator``) is kept
when its setup or call failed. A database of a wider scope is kept when a test
that used it failed while it existed. What is kept travels on the teardown
report's ``user_properties``, so the controller of an xdist run lists the
workers' databases too; the next run drops them (``Templates.drop_stale``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator

import pytest

from .. import urls
from ..runtime import Runtime
from . import state

PROPERTY = "overlord_kept_db"
FAILED = pytest.StashKey[list[str]]()  # on an item: the phases of it that failed
SHARED = pytest.StashKey[list["Shared"]]()  # on the config: databases of a wider scope, alive now
PENDING = pytest.StashKey[list[str]]()  # on the config: kept, not yet put on a report


@dataclass
class Shared:
    """A database outliving one test; ``used_by`` is the fixture whose tests' failures keep it."""

    name: str
    used_by: str
    failed: list[str] = field(default_factory=list)


def failed(item: pytest.Item) -> bool:
    return bool(item.stash.get(FAILED, None))


def track(config: pytest.Config, name: str, used_by: str) -> Shared:
    shared = Shared(name, used_by)
    config.stash.setdefault(SHARED, []).append(shared)
    return shared


def untrack(config: pytest.Config, shared: Shared) -> None:
    live = config.stash.get(SHARED, [])
    if shared in live:
        live.remove(shared)


def finish(config: pytest.Config, runtime: Runtime, name: str, url: str, failures: list[str]) -> bool:
    """Keep the database ``name`` when ``failures`` name failed tests and keeping is on; else the caller drops it."""
    if not (failures and state.get(config).settings.keep_failed):
        return False
    runtime.keep_db(name)
    which = failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
    config.stash.setdefault(PENDING, []).append(f"{which}: {name} at {urls.mask(url)}")
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash.setdefault(FAILED, []).append(report.when)
        for shared in item.config.stash.get(SHARED, []):
            if shared.used_by in getattr(item, "fixturenames", ()) and item.nodeid not in shared.failed:
                shared.failed.append(item.nodeid)
    if report.when == "teardown":  # fixtures of every scope have been finalised by now
        pending = item.config.stash.get(PENDING, [])
        report.user_properties.extend((PROPERTY, line) for line in pending)
        pending.clear()
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    kept = dict.fromkeys(str(value) for reports in terminalreporter.stats.values() for report in reports
                         for key, value in getattr(report, "user_properties", ()) if key == PROPERTY)
    kept.update(dict.fromkeys(terminalreporter.config.stash.get(PENDING, [])))  # none is expected: a last resort
    if not kept:
        return
    terminalreporter.section("overlord-db: databases kept for debugging")
    for line in kept:
        terminalreporter.write_line(line)
    plugin = terminalreporter.config.stash.get(state.STATE, None)
    backend = plugin.backend if plugin is not None else None
    terminalreporter.write_line({
        "embedded": "The embedded server keeps running so they can be reached; the next run stops it when it ends, "
                    "and drops them.",
        "docker": "The Docker container is removed at the end of the run, and they with it.",
    }.get(backend or "", "The next run drops them."))

"""pytest hooks: options, configuration, header, xdist hand-over, round-trip collection and summary (GitHub too).

No I/O beyond reading the project's own files happens in ``pytest_configure``:
the backend (which may ping Docker) is chosen on first need, once, in the
controller — by the header, or when xdist starts its workers, who are told
the choice — and never under ``--collect-only``.
"""
from __future__ import annotations

import contextlib
from typing import Any

import pytest

from .. import config as config_mod
from .. import github, interrupts
from ..errors import ConfigError, OverlordError
from . import fixtures, options, shared_report, state
from . import items as roundtrip_items

BACKEND_INPUT = "overlord_backend"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "overlord_roundtrip: a migration round-trip check")
    config.addinivalue_line("markers", "overlord_migrator(start): overlord_migrator's database starts at that migration")
    fixtures.register(config)  # even unconfigured: a test asking for a database then gets our paragraph
    found = options.values(config)
    given: dict[str, Any] = {options.FIELDS[ini]: value for ini, (value, _) in found.items() if value is not None}
    sources = {options.FIELDS[ini]: source for ini, (_, source) in found.items()}
    try:
        settings = config_mod.resolve(config.rootpath, sources=sources, **given)
    except ConfigError as exc:
        if not options.uses_overlord(config):
            return  # a project that only has the plugin installed must not break
        raise pytest.UsageError(str(exc)) from None
    plugin = state.PluginState(settings, report=lambda line: _to_terminal(config, line))
    if config.option.verbose > 0:  # -v: the migrations as a template build applies them
        plugin.detail = plugin.report
    workerinput = getattr(config, "workerinput", None)
    if workerinput and workerinput.get(BACKEND_INPUT):
        plugin.backend, plugin.reason = workerinput[BACKEND_INPUT]
    config.stash[state.STATE] = plugin
    interrupts.install()  # Ctrl-C and SIGTERM cancel a statement the server is running
    if config.getoption("overlord_roundtrip"):
        config.pluginmanager.register(RoundtripSummary(plugin), "overlord-db-roundtrip-summary")


def _to_terminal(config: pytest.Config, line: str) -> None:
    # Looked up when needed: the terminal reporter registers itself after this plugin's pytest_configure.
    # The build runs inside a fixture's setup, where output is captured: step out of the capture, as
    # pytest's own live logging does.
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: the controller chooses the backend once and tells every worker, and where the round trip's report goes."""
    plugin = node.config.stash.get(state.STATE, None)
    if plugin is not None:
        node.workerinput[BACKEND_INPUT] = list(plugin.choose_backend())
        shared_report.configure_node(node)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(state.STATE, None)
    if plugin is not None:
        plugin.shutdown()


def pytest_report_header(config: pytest.Config) -> list[str]:
    plugin = config.stash.get(state.STATE, None)
    if plugin is None:
        return []
    s = plugin.settings
    needs_ping = s.backend == "auto" and not s.db_url
    if config.option.collectonly and plugin.backend is None and needs_ping:
        backend = f"backend {s.backend} (chosen when a test needs a database)"
    else:
        name, reason = plugin.choose_backend()
        try:
            from ..servers import make_server

            where = make_server(s, name).describe()
        except OverlordError as exc:
            where = str(exc)
        backend = f"backend {name} ({reason}); {where}"
    lines = [f"overlord-db: {backend}",
             f"overlord-db: migrations {s.migrations_dir} ({s.migrator}); seed {s.seed or 'none'}"]
    if config.option.verbose > 0:
        for name, value, source in s.describe():
            lines.append(f"overlord-db:   {name} = {value}  [{source}]")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("overlord_roundtrip"):
        roundtrip_items.add_items(session, config, items)


class RoundtripSummary:
    """Collects the round-trip verdicts and accepted exceptions from every report, worker ones included (a
    plugin object registered per run: ``pytest_runtest_logreport`` gets no config to find the stash by)."""

    def __init__(self, plugin: state.PluginState) -> None:
        self.plugin = plugin
        self.rows: list[github.Row] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        found = dict(report.user_properties)
        for key, value in report.user_properties:
            if key == "accepted":
                self.plugin.accepted_seen.append((report.nodeid, str(value)))
        if "overlord_roundtrip_status" in found:
            self.rows.append(github.Row(
                report.nodeid.split("[", 1)[-1].rstrip("]"), str(found["overlord_roundtrip_status"]),
                str(found["overlord_roundtrip_file"]), float(str(found.get("overlord_roundtrip_seconds", 0))),
                _without_worker_line(report.longreprtext) if report.failed else ""))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Accepted round-trip exceptions are shown, never silently hidden; on GitHub, annotations and summary."""
        if self.plugin.accepted_seen:
            terminalreporter.section("overlord-db round trip: accepted exceptions")
            for nodeid, text in self.plugin.accepted_seen:
                terminalreporter.write_line(f"{nodeid.split('[', 1)[-1].rstrip(']')}: {text}")
        github.publish(self.rows, all(row.ok for row in self.rows), terminalreporter.write_line)


def _without_worker_line(text: str) -> str:
    # xdist heads a worker's failure with "[gw0] linux -- Python 3.x ..."; an annotation has no use for it.
    lines = text.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("[gw") else lines)

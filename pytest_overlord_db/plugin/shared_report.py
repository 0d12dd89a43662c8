"""The round trip's report, made once per run and read by every process of it.

Without xdist the process runs the round trip at its first round-trip item and keeps the report. Under xdist
the controller names a file in its own basetemp (private, made anew by pytest for every run) and a token
drawn for this run (``configure_node``). The first worker to need the report runs the round trip under a
file lock and writes the report there; a worker that needs it meanwhile waits on the lock and reads it. A
worker that dies mid-run releases the lock with its process, and the next one runs it again. A round trip
that fails with the plugin's own error (a broken migration folder, a server that will not start) is
written down as that error, so every item fails with it at once instead of running it again one by one.
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from ..errors import OverlordError
from ..servers.private import replace_file
from ..verdicts import Report
from . import state

SHARED_INPUT = "overlord_roundtrip_report"  # workerinput key: the file's path


def configure_node(node: Any) -> None:
    """xdist, in the controller: tell each worker where this run's report goes."""
    factory = getattr(node.config, "_tmp_path_factory", None)  # what xdist itself makes workers' basetemps from
    if factory is None or not node.config.getoption("overlord_roundtrip"):
        return
    token = node.config.stash.setdefault(_TOKEN, secrets.token_hex(8))
    # A fresh name per run: a folder some other run also sees (a --basetemp shared with remote workers) can
    # hold no report this run would read.
    node.workerinput[SHARED_INPUT] = str(factory.getbasetemp() / f"overlord-roundtrip-{token}.json")


def get(config: pytest.Config) -> Report:
    plugin = state.get(config)
    if isinstance(plugin.roundtrip, OverlordError):
        raise plugin.roundtrip
    if plugin.roundtrip is None:
        try:
            plugin.roundtrip = _shared(config, plugin)
        except OverlordError as exc:
            plugin.roundtrip = exc
            raise
    return plugin.roundtrip


def _shared(config: pytest.Config, plugin: state.PluginState) -> Report:
    where = (getattr(config, "workerinput", None) or {}).get(SHARED_INPUT)
    path = Path(where) if where else None
    if path is None or not path.parent.is_dir():  # not under xdist, or a worker on another machine
        return plugin.stack().roundtrip_report()
    with FileLock(str(path.with_suffix(".lock")), mode=0o600):
        if path.exists():
            found = json.loads(path.read_text())
            if "error" in found:
                raise OverlordError(found["error"])
            return Report.from_dict(found)
        # Written whole by rename (private, 0600): a reader never sees half a report.
        try:
            report = plugin.stack().roundtrip_report()
        except OverlordError as exc:
            replace_file(path, json.dumps({"error": str(exc)}))
            raise
        replace_file(path, report.to_json())
        return report


_TOKEN = pytest.StashKey[str]()

"""What one pytest process keeps between hooks and fixtures, in ``config.stash`` (never in module globals)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest

from ..config import Settings
from ..errors import OverlordError
from ..isolation import Isolation
from ..migrators import Migrator, for_folder
from ..verdicts import Report


@dataclass
class PluginState:
    settings: Settings
    backend: str | None = None  # chosen on first need: the Docker ping is I/O, never done in pytest_configure
    reason: str = ""
    isolation: Isolation | None = None
    accepted_seen: list[tuple[str, str]] = field(default_factory=list)
    report: Callable[[str], None] | None = None  # a line to the terminal, even while output is captured
    detail: Callable[[str], None] | None = None  # the same, for what only -v shows
    roundtrip: Report | OverlordError | None = None  # --overlord-roundtrip's report or its error (shared_report)
    _migrator: Migrator | None = None

    @property
    def migrator(self) -> Migrator:
        """The project's migrator, made once: collection reads its chain, the runtime migrates with it."""
        if self._migrator is None:
            self._migrator = for_folder(self.settings.migrations_dir, self.settings.migrator)
        return self._migrator

    def choose_backend(self) -> tuple[str, str]:
        if self.backend is None:
            from ..servers import choose_backend

            self.backend, self.reason = choose_backend(self.settings)
        return self.backend, self.reason

    def stack(self) -> Isolation:
        if self.isolation is None:
            backend, reason = self.choose_backend()
            self.isolation = Isolation(self.settings, backend, reason, self.report, self.migrator)
            self.isolation.detail = self.detail
        return self.isolation

    def shutdown(self) -> None:
        if self.isolation is None:
            return
        try:
            self.isolation.shutdown()
        except Exception as exc:  # noqa: BLE001 - the tests have run; one line, not a traceback at exit
            (self.report or print)(f"overlord-db: cleaning up after the run failed: {exc}")


STATE = pytest.StashKey[PluginState]()


def get(config: pytest.Config) -> PluginState:
    state = config.stash.get(STATE, None)
    if state is None:
        raise pytest.UsageError("pytest-overlord-db is not configured: no migrations folder found (see --overlord-migrations).")
    return state

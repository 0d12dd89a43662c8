"""A migration that runs long is visible, and can be given a deadline.

While migrations apply (the template build, the CLI), a small thread notes
which one runs; once one has run for two seconds it says so every few
seconds, and past the optional timeout it cancels the running statement.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

from . import interrupts
from .errors import MigrationError

SHOW_AFTER = 2.0
SHOW_EVERY = 5.0


class StepWatch:
    def __init__(self, report: Callable[[str], None] | None, timeout: float | None, label: str) -> None:
        self.report, self.timeout, self.label = report, timeout, label
        self.current: tuple[str, str, float] | None = None
        self.timed_out: str | None = None
        self._shown = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="overlord-watch", daemon=True)
        self._thread.start()

    def step(self, migration: object, direction: str) -> None:
        """The migrators' ``on_progress`` callback: ``migration`` starts now."""
        self.current = (str(getattr(migration, "id", migration)), direction, time.monotonic())
        self._shown = 0.0

    def _run(self) -> None:
        while not self._done.wait(0.25):
            current = self.current
            if current is None:
                continue
            ident, direction, started = current
            elapsed = time.monotonic() - started
            if self.report and elapsed >= SHOW_AFTER and (not self._shown or elapsed - self._shown >= SHOW_EVERY):
                self._shown = elapsed
                verb = "applying" if direction == "apply" else "rolling back"
                self.report(f"overlord-db: {self.label}: {verb} {ident}, running for {elapsed:.0f} s "
                            "(Ctrl-C cancels it)")
            if self.timeout and elapsed > self.timeout and self.timed_out is None:
                self.timed_out = ident
                interrupts.cancel_all()

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=1)

    def timeout_message(self) -> str:
        return (f"Migration {self.timed_out} ran longer than the migration timeout of {self.timeout:g} s "
                "(--overlord-migration-timeout / OVERLORD_MIGRATION_TIMEOUT) and was cancelled on the server; "
                "its transaction was rolled back.")


@contextlib.contextmanager
def watched(report: Callable[[str], None] | None, timeout: float | None, label: str) -> Iterator[StepWatch]:
    """A StepWatch for the block; a migration it cancelled for its timeout fails with that said."""
    watch = StepWatch(report, timeout, label)
    try:
        yield watch
    except MigrationError:
        if watch.timed_out:
            raise MigrationError(watch.timeout_message()) from None
        raise
    finally:
        watch.close()

"""``--overlord-roundtrip``: one test item per migration, one for the full cycle, one for the accepted list."""
from __future__ import annotations

from typing import Any

import pytest

from .. import github
from ..errors import OverlordError
from . import shared_report, state


class RoundtripFailure(Exception):
    pass


class RoundtripItem(pytest.Item):
    """Passes when its migration's apply -> rollback -> apply leaves the schema exact."""

    def __init__(self, *, verdict_id: str, path_hint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdict_id = verdict_id
        self.path_hint = path_hint
        self.add_marker("overlord_roundtrip")

    def runtest(self) -> None:
        report = shared_report.get(self.config)
        # In JUnit XML (as <property> elements) and, through the reports, in the controller's GitHub output.
        self.user_properties.append(("overlord_roundtrip_file", self.path_hint))
        if self.verdict_id == "stale":
            self.user_properties.append(("overlord_roundtrip_status", "stale" if report.stale_exceptions else "ok"))
            if report.stale_exceptions:
                raise RoundtripFailure("\n".join(
                    f"{s['migration']} / {s['object']}: {s['why']}; remove it from [tool.overlord_db] or fix it"
                    for s in report.stale_exceptions))
            return
        verdicts = report.migrations + report.whole
        verdict = next(v for v in verdicts if v.id == self.verdict_id)
        self.user_properties += [("overlord_roundtrip_status", verdict.status),
                                 ("overlord_roundtrip_seconds", f"{verdict.seconds:.3f}")]
        for item in verdict.accepted:
            self.user_properties.append(("accepted", f"{item['object']} — {item['reason']}"))
        if not verdict.ok:
            text = [f"{verdict.id}: {verdict.status}"]
            if verdict.error:
                text.append(verdict.error)
            if verdict.diff:
                text.append(verdict.diff)
            raise RoundtripFailure("\n".join(text))

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, RoundtripFailure):
            return str(excinfo.value)
        if isinstance(excinfo.value, OverlordError):
            return f"overlord-db: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path_hint, None, f"roundtrip {self.verdict_id}"


def add_items(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    plugin = state.get(config)
    from ..roundtrip import FULL_CYCLE, SEEDED

    try:
        chain = plugin.migrator.chain()
    except OverlordError as exc:
        raise pytest.UsageError(str(exc)) from None
    found: list[pytest.Item] = []
    for migration in chain:
        found.append(RoundtripItem.from_parent(session, name=f"roundtrip[{migration.id}]", verdict_id=migration.id,
                                               path_hint=str(migration.path)))
    if chain:
        found.append(RoundtripItem.from_parent(session, name="roundtrip[all-down-and-up]", verdict_id=FULL_CYCLE,
                                               path_hint=str(plugin.settings.migrations_dir)))
    if chain and plugin.settings.seed:
        found.append(RoundtripItem.from_parent(session, name=f"roundtrip[seed-data-{plugin.settings.seed}]", verdict_id=SEEDED,
                                               path_hint=str(plugin.settings.seeds_dir / plugin.settings.seed)))
    if plugin.settings.accepted or plugin.settings.irreversible:
        found.append(RoundtripItem.from_parent(session, name="roundtrip[accepted-exceptions]", verdict_id="stale",
                                               path_hint=str(github.declarations_file(plugin.settings))))
    # One first and the rest last: the worker that gets the first runs the round trip while the others run the
    # suite, and by the time the rest are handed out the report is there to read (xdist hands out consecutive
    # items in chunks, so a block of them at the front would keep several workers waiting on the one run).
    items[:0] = found[:1]
    items.extend(found[1:])

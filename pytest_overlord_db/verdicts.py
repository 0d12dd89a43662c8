"""The round trip's verdicts: one per migration, one for the full cycle, and the report that holds them, as
text for a person and as JSON for a machine (its shape: docs/reference/json.md)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

DECLARED = "declared_irreversible"
STATUSES = ("ok", "irreversible", "rollback_failed", "reapply_failed", "apply_failed", "no_rollback", DECLARED)
PASSING = ("ok", DECLARED)
FULL_CYCLE = "(all migrations)"
SEEDED = "(with seed data)"  # the walk down from the top with seeds/ENV loaded (seedwalk)


@dataclass
class Verdict:
    id: str
    status: str = "ok"
    diff: str = ""
    error: str | None = None
    accepted: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in PASSING


@dataclass
class Report:
    migrations: list[Verdict]
    full_cycle: Verdict | None
    stale_exceptions: list[dict[str, str]]
    seconds: float
    data_gaps: list[dict[str, str]] = field(default_factory=list)  # tables no rows could be generated for, and why
    seeded: Verdict | None = None

    @property
    def whole(self) -> list[Verdict]:
        """The verdicts on the chain as a whole: the full cycle, and the walk with seed data when there was one."""
        return [v for v in (self.full_cycle, self.seeded) if v is not None]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.migrations + self.whole) and not self.stale_exceptions

    def to_json(self) -> str:
        return json.dumps(
            {
                "migrations": [asdict(v) for v in self.migrations],
                "full_cycle": asdict(self.full_cycle) if self.full_cycle else None,
                "seeded": asdict(self.seeded) if self.seeded else None,
                "stale_exceptions": self.stale_exceptions,
                "data_gaps": self.data_gaps,
                "ok": self.ok,
                "seconds": round(self.seconds, 3),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        """The report :meth:`to_json` wrote (under xdist one worker runs the round trip, the others read it)."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The report from :meth:`to_json`'s JSON, already parsed."""
        def verdict(item: dict[str, object] | None) -> Verdict | None:
            return Verdict(**item) if item else None  # type: ignore[arg-type]
        return cls([Verdict(**item) for item in data["migrations"]], verdict(data["full_cycle"]),
                   data["stale_exceptions"], data["seconds"], data["data_gaps"], verdict(data["seeded"]))

    def render(self) -> str:
        width = max([len(v.id) for v in self.migrations + self.whole] + [len(FULL_CYCLE)])
        lines = [f"Round trip of {len(self.migrations)} migration(s): apply -> rollback -> apply, schema and data compared"]
        for verdict in self.migrations + self.whole:
            lines.append(f"  {verdict.status:21} {verdict.id:{width}}  {verdict.seconds:6.2f}s")
            for item in verdict.accepted:
                lines.append(f"      accepted: {item['object']} ({item['reason']})")
            if verdict.error:
                lines.append("      " + verdict.error)
            if verdict.diff:
                lines.extend("      " + line for line in verdict.diff.splitlines())
        for stale in self.stale_exceptions:
            lines.append(f"  stale exception: {stale['migration']} / {stale['object']}: {stale['why']}; "
                         "remove it from [tool.overlord_db] (or fix its name)")
        for gap in self.data_gaps:
            lines.append(f"  no generated rows: {gap['table']} (from {gap['migration']} on): {gap['why']}")
        counts: dict[str, int] = {}
        for verdict in self.migrations:
            counts[verdict.status] = counts.get(verdict.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        lines.append(f"Result: {'OK' if self.ok else 'FAILED'} ({summary}) in {self.seconds:.2f}s")
        return "\n".join(lines)

"""The round trip's verdicts in GitHub Actions' own terms: an ``::error`` annotation on the migration file of
every failing verdict, and a Markdown table in the job's summary (``$GITHUB_STEP_SUMMARY``).

Only when ``GITHUB_ACTIONS=true``; elsewhere nothing is written. The CLI builds
the rows from its report, pytest from the round-trip items' reports (so xdist
workers' verdicts are included), and both publish them the same way.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .config import Settings
from .migrators import Migration
from .verdicts import PASSING, Report

_LINE = re.compile(r"\(line (\d+) of (/[^)]+)\)")  # sqltext's "Failing statement (line N of PATH)"


@dataclass(frozen=True)
class Row:
    id: str  # the migration, the full cycle, or "stale declarations"
    status: str
    path: str  # the file an annotation points at
    seconds: float = 0.0
    detail: str = ""  # the error and the diff, as the text report shows them

    @property
    def ok(self) -> bool:
        return self.status in PASSING


def declarations_file(settings: Settings) -> Path:
    """Where the project's declarations (accepted, irreversible) are: pyproject.toml, else yoyo.ini."""
    pyproject = settings.root / "pyproject.toml"
    return pyproject if pyproject.is_file() or settings.ini_path is None else settings.ini_path


def from_report(report: Report, chain: Sequence[Migration], settings: Settings) -> list[Row]:
    """Rows of a report: each migration's at its file, the full cycle's at the migrations folder, stale
    declarations at the file they are in."""
    paths = {m.id: str(m.path) for m in chain}
    folder = str(settings.migrations_dir)
    rows = [Row(v.id, v.status, paths.get(v.id, folder), v.seconds, "\n".join(filter(None, [v.error, v.diff])))
            for v in report.migrations + report.whole]
    if report.stale_exceptions:
        rows.append(Row("stale declarations", "stale", str(declarations_file(settings)), 0.0, "\n".join(
            f"{s['migration']} / {s['object']}: {s['why']}" for s in report.stale_exceptions)))
    return rows


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def _escape(text: str, *, prop: bool = False) -> str:
    # GitHub's workflow-command encoding: data escapes %, CR, LF; properties also : and ,
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _relative(path: str, environ: Mapping[str, str]) -> str:
    base = Path(environ.get("GITHUB_WORKSPACE") or os.getcwd())
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path


def error_lines(rows: list[Row], environ: Mapping[str, str] = os.environ) -> list[str]:
    """One ``::error`` line per failing row: at the failing statement when the error names one (the full cycle's
    error names the migration that failed), else at the top of the row's file."""
    lines = []
    for row in rows:
        if row.ok:
            continue
        found = _LINE.search(row.detail)
        path, line = (found.group(2), found.group(1)) if found else (row.path, "1")
        where = f"file={_escape(_relative(path, environ), prop=True)},line={line}"
        title = _escape(f"overlord-db round trip: {row.id} {row.status}", prop=True)
        lines.append(f"::error {where},title={title}::{_escape(row.detail or row.status)}")
    return lines


def summary(rows: list[Row], ok: bool) -> str:
    """The job summary: a table of verdicts, then each failure's details in a collapsed block."""
    out = [f"## overlord-db round trip: {'OK' if ok else 'FAILED'}", "",
           "| migration | verdict | seconds |", "|---|---|---:|"]
    out += [f"| `{row.id}` | {'✅' if row.ok else '❌'} {row.status} | {row.seconds:.2f} |" for row in rows]
    for row in rows:
        if not row.ok and row.detail:
            out += ["", f"<details><summary><code>{row.id}</code>: {row.status}</summary>", "", "```diff",
                    row.detail.replace("```", "'''"), "```", "</details>"]
    return "\n".join(out) + "\n"


def publish(rows: list[Row], ok: bool, write_line: Callable[[str], None],
            environ: Mapping[str, str] = os.environ) -> None:
    """On GitHub Actions: annotations through ``write_line`` (stdout, which the runner reads), the summary
    appended to ``$GITHUB_STEP_SUMMARY``. Anywhere else: nothing."""
    if not enabled(environ) or not rows:
        return
    for line in error_lines(rows, environ):
        write_line(line)
    target = environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(summary(rows, ok))

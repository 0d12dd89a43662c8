"""What the rest of the plugin needs from a migration tool: the ``Migrator`` interface.

pgtestdb's idea (``Migrator{Hash, Migrate}``), grown by what a round trip and a
CLI need: the chain in the tool's real apply order, a content hash for the
template cache, apply and roll back with timings, which steps can be rolled
back, the tool's own bookkeeping tables (left out of snapshots) and what is
applied. The template, the round trip, the schema snapshot, the CLI and the
fixtures only ever talk to this interface; one module per tool implements it.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, ClassVar, Sequence

from ..errors import ConfigError

# The name may sit in quotes, escaped quotes (inside a Python string) or none.
_CREATE_EXTENSION = re.compile(r"""create\s+extension\s+(?:if\s+not\s+exists\s+)?\\?["']?(?!if\b)([A-Za-z0-9_\-]+)""", re.I)
_LEADING_NUMBER = re.compile(r"^(\d+)")

Progress = Callable[["Migration", str], None]


@dataclass(frozen=True)
class Migration:
    """One migration of a chain, as every part of the plugin sees it."""

    id: str
    path: Path
    reversible: bool  # False when a step has no rollback: "rolling it back" would silently do nothing

    @property
    def number(self) -> int | None:
        """The leading number of its id (``0003.x`` and ``003_x`` are both 3), for targets by number."""
        match = _LEADING_NUMBER.match(self.id)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Applied:
    id: str
    seconds: float


@dataclass(frozen=True)
class AppliedInfo:
    id: str
    applied_at: datetime | None  # UTC
    duration_ms: float | None  # None when the tool recorded none (applied by the plain tool, say)


class Migrator(ABC):
    """One migration tool's view of one migrations folder."""

    name: ClassVar[str]
    #: Tables the tool keeps its own records in: never part of a schema comparison.
    bookkeeping: ClassVar[tuple[str, ...]] = ()

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    # -- reading ------------------------------------------------------------------
    @abstractmethod
    def chain(self) -> list[Migration]:
        """Every migration in the order the tool applies them; a broken file is a MigrationError naming it."""

    def content_hash(self) -> str:
        """Changes whenever anything that could change the migrated schema changes (for the template cache).

        The default hashes every file under the folder, by relative name and
        content, plus :meth:`tool_version`.
        """
        h = hashlib.sha256(f"{self.name} {self.tool_version()}".encode())
        files = sorted(p for p in self.folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            h.update(b"\0M\0" + str(path.relative_to(self.folder)).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()

    def tool_version(self) -> str:
        return ""

    def required_extensions(self) -> set[str]:
        """Extensions the migrations create, checked up front so a missing one is one clear error."""
        found: set[str] = set()
        for path in sorted(self.folder.rglob("*")):
            if path.suffix in {".py", ".sql"} and path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                found.update(m.lower() for m in _CREATE_EXTENSION.findall(text))
        return found

    @abstractmethod
    def show(self, migration: Migration, direction: str) -> list[str]:
        """What ``direction`` ("apply" or "rollback") would run, as lines for a dry run."""

    # -- changing a database ---------------------------------------------------------
    @abstractmethod
    def apply(self, url: str, migrations: Sequence[Migration], *, lock: bool = True,
              on_progress: Progress | None = None, quiet: bool = False) -> list[Applied]:
        """Apply those of ``migrations`` that are pending, in order, each in its own transaction where the
        tool allows; a failure is a MigrationError naming the migration, statement and message."""

    @abstractmethod
    def rollback(self, url: str, migrations: Sequence[Migration], *, lock: bool = True,
                 on_progress: Progress | None = None, quiet: bool = False) -> list[Applied]:
        """Roll back those of ``migrations`` (in any order) that are applied, newest first."""

    @abstractmethod
    def applied(self, url: str) -> list[AppliedInfo]:
        """What is applied to the database at ``url``, in the order it was applied."""

    def session(self, url: str) -> contextlib.AbstractContextManager[None]:
        """Within it, runs on ``url`` may keep connections open between them (a walk on a throwaway database
        nothing else uses); they are closed when it ends. By default nothing is kept."""
        return contextlib.nullcontext()

    def break_lock(self, url: str) -> str:
        """Remove a lock left by a killed run; say what was done."""
        return f"The {self.name} migrator holds no lock between runs: nothing to break."

    def new(self, message: str) -> list[Path]:
        """Create the files of a new, empty migration; return them."""
        raise ConfigError(f"The {self.name} migrator cannot create migrations; write the file by hand.")


def position(chain: Sequence[Migration], target: str) -> int:
    """Index of ``target`` in the chain: an id, or its number ('3' and '0003' both mean 0003.*)."""
    for index, migration in enumerate(chain):
        if migration.id == target:
            return index
    if target.isdigit():
        matches = [i for i, m in enumerate(chain) if m.number == int(target)]
        if len(matches) == 1:
            return matches[0]
    known = ", ".join(m.id for m in chain) or "none"
    raise ConfigError(f"Unknown migration {target!r}: give an id or its number. Migrations: {known}.")


def slug(message: str) -> str:
    """A file-name-safe form of a migration's description."""
    return re.sub(r"[^a-z0-9]+", "-", message.lower()).strip("-") or "migration"

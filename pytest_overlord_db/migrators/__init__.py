"""Migration tools behind one interface: pick one for a migrations folder.

``yoyo`` is the default; ``sqlfolders`` is the seed's ``versions/`` +
``rollbacks/`` layout, chosen automatically when a ``versions/`` folder
exists. Any other tool is one class implementing :class:`Migrator`, named by
``module:Class`` (``--overlord-migrator=myproject.alembic_migrator:AlembicMigrator``).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ConfigError
from .base import Applied, AppliedInfo, Migration, Migrator, position

BUILT_IN = {
    "yoyo": "pytest_overlord_db.migrators.yoyo:YoyoMigrator",
    "sqlfolders": "pytest_overlord_db.migrators.sqlfolders:SqlFoldersMigrator",
}


def choose(folder: Path) -> str:
    """``auto``: the seed's SQL-folder layout when ``versions/`` exists, else yoyo."""
    from .sqlfolders import detect

    return "sqlfolders" if detect(folder) else "yoyo"


def for_folder(folder: Path, name: str | None = "auto") -> Migrator:
    """The migrator ``name`` (built-in, ``module:Class``, or ``auto``) for ``folder``."""
    name = name or "auto"
    if name == "auto":
        name = choose(folder)
    target = BUILT_IN.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ConfigError(
            f"Unknown migrator {name!r}: use auto, {', '.join(BUILT_IN)}, or module:Class naming a Migrator subclass.")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Migrator {name!r} cannot be loaded: {type(exc).__name__}: {exc}.") from None
    if not (isinstance(cls, type) and issubclass(cls, Migrator)):
        raise ConfigError(f"Migrator {name!r} is not a subclass of pytest_overlord_db.migrators.Migrator.")
    migrator: Migrator = cls(folder)
    return migrator


__all__ = ["Migrator", "Migration", "Applied", "AppliedInfo", "position", "for_folder", "choose", "BUILT_IN"]

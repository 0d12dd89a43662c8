"""pytest-overlord-db: migration-verified PostgreSQL test databases for pytest."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ConfigError, MigrationError, OverlordError, ServerError


def __getattr__(name: str) -> object:  # lazy: the pytest plugin imports this package and needs none of it
    if name in ("ensure_migrations", "ensure_migrations_async"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = [
    "__version__", "OverlordError", "ConfigError", "MigrationError", "ServerError",
    "ensure_migrations", "ensure_migrations_async",
]

"""pytest-overlord-db: migration-verified PostgreSQL test databases for pytest."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ConfigError, MigrationError, OverlordError, ServerError

__all__ = ["__version__", "OverlordError", "ConfigError", "MigrationError", "ServerError"]

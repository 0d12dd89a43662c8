"""The one exception family the plugin and the CLI raise for things a user can fix."""
from __future__ import annotations


class OverlordError(Exception):
    """A problem worth one paragraph to the user, never a traceback.

    ``exit_code`` follows the CLI's contract: 1 when a migration, seed or check
    failed, 2 for usage and connection errors.
    """

    exit_code = 1


class ConfigError(OverlordError):
    """Bad option, missing folder, unset variable: the user's input is wrong."""

    exit_code = 2


class ServerError(OverlordError):
    """The database server cannot be started, reached or used."""

    exit_code = 2


class ServerGone(ServerError):
    """The server stopped answering in the middle of the run."""


class MigrationError(OverlordError):
    """A migration failed to load, apply or roll back."""

    exit_code = 1

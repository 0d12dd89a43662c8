"""An existing server given by URL: we only create and drop our own databases there."""
from __future__ import annotations

from .. import urls
from ..errors import ConfigError, ServerError
from .base import Server, connect


class ExternalServer(Server):
    kind = "url"

    def __init__(self, url: str, admin_db: str | None = None) -> None:
        try:
            self.url = urls.normalize(url)
        except ValueError as exc:
            raise ConfigError(f"--overlord-db-url: {exc}") from None
        if admin_db:  # managed servers often have no `postgres` database to connect to first
            self.url = urls.with_database(self.url, admin_db)
        self.admin_db = admin_db

    def start(self) -> str:
        try:
            conn = connect(self.url, connect_timeout=5)  # fail fast with a masked message
        except ServerError as exc:
            if "does not exist" not in str(exc):
                raise
            database = urls.dsn_parts(self.url).get("dbname") or "(the user's name)"
            given = "--overlord-admin-db" if self.admin_db else "--overlord-db-url"
            raise ConfigError(
                f"The server at {urls.mask(self.url)} has no database {database} (named by {given}), and the "
                "plugin must connect to one before it can create its own. Name one that exists and that your "
                "role may connect to with --overlord-admin-db=NAME (or OVERLORD_ADMIN_DB, ini overlord_admin_db); "
                "not template1, which every new database is copied from.") from None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
                row = cur.fetchone()
        finally:
            conn.close()
        if not row or not row[0]:
            raise ConfigError(
                f"The role in {urls.mask(self.url)} may not create databases; grant it CREATEDB "
                "(the plugin clones a template database per run and per fresh-database test)."
            )
        return self.url

    def stop(self) -> None:
        pass

    def describe(self) -> str:
        return f"url {urls.mask(self.url)}"

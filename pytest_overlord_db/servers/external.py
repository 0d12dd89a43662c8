"""An existing server given by URL: we only create and drop our own databases there."""
from __future__ import annotations

from .. import urls
from ..errors import ConfigError
from .base import Server, connect


class ExternalServer(Server):
    kind = "url"

    def __init__(self, url: str) -> None:
        try:
            self.url = urls.normalize(url)
        except ValueError as exc:
            raise ConfigError(f"--overlord-db-url: {exc}") from None

    def start(self) -> str:
        conn = connect(self.url, connect_timeout=5)  # fail fast with a masked message
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

"""Database URLs: one place that normalises schemes, masks passwords and swaps databases."""
from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

# Schemes that all mean "PostgreSQL"; asyncpg and psycopg2 want the plain one,
# yoyo rejects +psycopg2 (what testcontainers returns).
_POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+psycopg",
    "postgresql+asyncpg",
    "postgres+psycopg2",
}


def normalize(url: str) -> str:
    """Return ``url`` with the plain ``postgresql://`` scheme every driver here accepts."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}): {mask(url)}")
    return urlunsplit(("postgresql",) + tuple(parts[1:]))


def mask(url: str) -> str:
    """Replace the password in ``url`` with ``***`` so it can be shown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    query = parts.query
    if query:
        pairs = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query)]
        query = urlencode(pairs, safe="/*")
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str, url: str) -> str:
    """Remove ``url``'s password from free text (driver messages sometimes echo it)."""
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name), parts.query, parts.fragment))


def dsn_parts(url: str) -> dict[str, object]:
    """Keyword arguments for psycopg2.connect / asyncpg.connect (host may be a socket folder).

    libpq's own parser (through psycopg2) reads the URL, percent-escapes and
    ``?host=`` included.
    """
    try:
        parts = psycopg2.extensions.parse_dsn(normalize(url))
    except psycopg2.ProgrammingError:
        raise ValueError(f"not a valid PostgreSQL URL: {mask(url)}") from None
    return {
        "host": parts.get("host"),
        "port": int(parts.get("port") or 5432),
        "user": parts.get("user"),
        "password": parts.get("password"),
        "dbname": parts.get("dbname"),
    }

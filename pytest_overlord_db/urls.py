"""Database URLs: one place that normalises schemes, masks passwords and swaps databases."""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

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


def _userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """(scheme://, user, password as written, the rest from the last ``@`` on) when ``url`` has a user.

    A ``#``, ``/``, ``@`` or ``[`` in an unescaped password confuses URL parsers, libpq's too (it splits
    at the first ``@`` and looks the rest of the password up as a host name). So the user part is taken
    to end at the *last* ``@``: that can only ever hide more than the password (an ``@`` in a query
    parameter is the price: write it as %40 there)."""
    start = url.find("://")
    if start < 0:
        return None
    at = url.rfind("@", start)
    if at < 0:
        return None
    user, sep, password = url[start + 3:at].partition(":")
    return url[:start + 3], user, password if sep else None, url[at:]


def normalize(url: str) -> str:
    """``url`` with the plain ``postgresql://`` scheme every driver here accepts, and its password
    percent-escaped, so every driver reads the host and the password as the user meant them."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {scheme if sep else ''!r}): {mask(url)}")
    url = "postgresql://" + rest
    parts = _userinfo(url)
    if parts is not None and parts[2] is not None:
        url = f"{parts[0]}{parts[1]}:{quote(unquote(parts[2]), safe='')}{parts[3]}"
    return url


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def mask(url: str) -> str:
    """Replace the password in ``url`` with ``***`` so it can be shown."""
    parts = _userinfo(url)
    if parts and parts[2] is not None:
        url = f"{parts[0]}{parts[1]}:***{parts[3]}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def mask_text(text: str, url: str) -> str:
    """Remove ``url``'s password from free text (driver messages sometimes echo it)."""
    secrets = set()
    parts = _userinfo(url)
    values = [parts[2]] if parts and parts[2] else []
    values += [url[m.end(1):m.end()] for m in _QUERY_PASSWORD.finditer(url)]
    for value in values:
        plain = unquote(value)
        secrets |= {value, plain, quote(plain, safe=""), quote(plain)}
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name), parts.query, parts.fragment))


def _parsed(url: str) -> dict[str, str]:
    try:
        return dict(psycopg2.extensions.parse_dsn(normalize(url)))
    except psycopg2.ProgrammingError:
        raise ValueError(f"not a valid PostgreSQL URL: {mask(url)}") from None


def dsn_parts(url: str) -> dict[str, object]:
    """Keyword arguments for psycopg2.connect / asyncpg.connect (host may be a socket folder).

    libpq's own parser (through psycopg2) reads the URL, percent-escapes and
    ``?host=`` included.
    """
    parts = _parsed(url)
    return {
        "host": parts.get("host"),
        "port": int(parts.get("port") or 5432),
        "user": parts.get("user"),
        "password": parts.get("password"),
        "dbname": parts.get("dbname"),
    }


# What a connection to a kept backend carries: where, who, which database. It reaches the server without
# TLS, so only over a unix socket or loopback, and only for a URL that asks for nothing more.
_KEPT = {"host", "port", "user", "password", "dbname"}
_PLAIN = {"disable", "allow", "prefer"}


def keepable(url: str) -> bool:
    """Whether connections to ``url`` may be lent backends kept between tests (or go through the relay):
    one host, a unix socket or a loopback address, no sslmode that asks for TLS and no other parameters
    (``application_name``, ``options``, …); any other URL gets a connection of its own, as it says."""
    parts = _parsed(url)
    if set(parts) - _KEPT - {"sslmode"} or parts.get("sslmode", "prefer") not in _PLAIN:
        return False
    host, port = parts.get("host") or "localhost", parts.get("port") or ""
    if "," in host or "," in port:
        return False
    if host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: where it leads is not known here
        return False

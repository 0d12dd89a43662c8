"""Catalog queries run as prepared statements of the connection: an incremental snapshot's queries touch a
few rows each, and planning them (big queries, many subplans) cost more than running them.

A generic plan is made for the catalog as it is when the statement is prepared. A round trip starts on an
empty database and ends on a big one: a plan made on the first (a sequential scan of a one-page pg_index
beats its index) scanned 1,600 rows where it looks up one at 500 migrations, and made each snapshot's cost
grow with the schema. ``planned_for`` tells the statements how big the database is; they are prepared
again each time it has doubled (or halved twice: a walk's rollbacks shrink it for a moment only).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

# (id of the connection, its server process) -> name prepared there -> the size class it was planned for;
# the pid tells a new connection that reuses an old one's id apart.
_PREPARED: dict[tuple[int, int], dict[str, int]] = {}
_SIZE: dict[tuple[int, int], int] = {}  # the connection's size class now


def _key(conn: Any) -> tuple[int, int]:
    return id(conn), conn.info.backend_pid


def planned_for(cur: Any, objects: int) -> None:
    """The statements ``cur``'s connection runs next are for a database of about ``objects`` catalog objects."""
    _SIZE[_key(cur.connection)] = max(objects, 1).bit_length()


def execute(cur: Any, query: str, args: Sequence[str] = ()) -> None:
    """Run ``query`` (parameters $1, $2... of the types it casts them to) with ``args``, preparing it on first use."""
    key = _key(cur.connection)
    names = _PREPARED.setdefault(key, {})
    size = _SIZE.get(key, 0)
    name = "overlord_" + hashlib.md5(query.encode()).hexdigest()[:20]
    planned = names.get(name)
    if planned is None or not planned - 1 <= size <= planned:
        if planned is not None:
            del names[name]  # forgotten first: a PREPARE that fails (a cancel) must be made again next time
            cur.execute(f"DEALLOCATE {name}")
        cur.execute(f"PREPARE {name} AS {query}")
        names[name] = size
    cur.execute(f"EXECUTE {name}" + (f"({', '.join(['%s'] * len(args))})" if args else ""), tuple(args))


def oids(values: Iterable[int]) -> str:
    """An oid[] parameter, as text."""
    return "{" + ",".join(str(int(v)) for v in sorted(set(values))) + "}"

"""Catalog queries run as prepared statements of the connection: an incremental snapshot's queries touch a
few rows each, and planning them (big queries, many subplans) cost more than running them."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

# (id of the connection, its server process) -> names prepared there; the pid tells a new connection that
# reuses an old one's id apart.
_PREPARED: dict[tuple[int, int], set[str]] = {}


def execute(cur: Any, query: str, args: Sequence[str] = ()) -> None:
    """Run ``query`` (parameters $1, $2... of the types it casts them to) with ``args``, preparing it on first use."""
    conn = cur.connection
    names = _PREPARED.setdefault((id(conn), conn.info.backend_pid), set())
    name = "overlord_" + hashlib.md5(query.encode()).hexdigest()[:20]
    if name not in names:
        cur.execute(f"PREPARE {name} AS {query}")
        names.add(name)
    cur.execute(f"EXECUTE {name}" + (f"({', '.join(['%s'] * len(args))})" if args else ""), tuple(args))


def oids(values: Iterable[int]) -> str:
    """An oid[] parameter, as text."""
    return "{" + ",".join(str(int(v)) for v in sorted(set(values))) + "}"

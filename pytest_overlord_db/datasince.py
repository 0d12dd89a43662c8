"""Which tables' rows are the same as in an earlier snapshot of the same database, without reading them:
an incremental snapshot copies those tables' data and reads the others (``tabledata``).

A row written since that snapshot (inserted, or a new version of an updated one) has an xmin at or after
its horizon; a deleted row leaves none, but the count is then lower, unless a row was written too. So a
table with as many rows as then and none written since holds the same rows. What changes how the rows
print without writing them (a column's type, an enum label's name) changes the catalog: the caller reads
those tables whatever this says.
"""
from __future__ import annotations

from typing import Any

_PER_STATEMENT = 100


def unchanged(cur: Any, tables: list[str], before: dict[str, tuple[int, str]], horizon: int) -> set[str]:
    """Of ``tables`` (qualified names, whose data ``before`` holds), those with the same rows as then."""
    same: set[str] = set()
    for start in range(0, len(tables), _PER_STATEMENT):
        chunk = tables[start:start + _PER_STATEMENT]
        cur.execute(" UNION ALL ".join(
            f"SELECT {number}, count(*), coalesce(bool_or(age(t.xmin) <= age('{int(horizon)}'::xid)), false) FROM ONLY {name} t"
            for number, name in enumerate(chunk)))
        for number, count, written in cur.fetchall():
            if not written and count == before["data " + chunk[number]][0]:
                same.add(chunk[number])
    return same

"""Per-environment seed data: seeds/ENV/*.sql in sorted order, each file in its own transaction."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg2

from .errors import OverlordError
from .sqltext import find_statement


class SeedError(OverlordError):
    exit_code = 1


@dataclass(frozen=True)
class SeedResult:
    file: Path
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_seed_error(path: Path, sql: str, exc: psycopg2.Error) -> str:
    primary = (exc.pgerror or str(exc)).strip().splitlines()[0].removeprefix("ERROR:").strip()
    position = getattr(exc.diag, "statement_position", None)
    statement = " ".join(find_statement(sql, int(position) if position else None).split())
    line = sql.count("\n", 0, int(position) - 1) + 1 if position else None
    where = f"{path}:{line}" if line else str(path)
    shown = f" Failing statement: {statement[:300]}" if statement else ""
    return f"Seed file {where} failed: {primary} (SQLSTATE {exc.pgcode}).{shown} The file was rolled back."


def load(conn: "psycopg2.extensions.connection", files: list[Path], *, stop_on_error: bool = True) -> list[SeedResult]:
    """Run each file in its own transaction; stop at the first failure unless told to go on."""
    results = []
    conn.autocommit = False
    for path in files:
        sql = path.read_text(encoding="utf-8")
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
            conn.commit()
            results.append(SeedResult(path))
        except psycopg2.Error as exc:
            conn.rollback()
            message = describe_seed_error(path, sql, exc)
            if stop_on_error:
                raise SeedError(message) from None
            results.append(SeedResult(path, message))
    conn.autocommit = True
    return results

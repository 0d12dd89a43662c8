"""How long each yoyo migration took, which yoyo does not record: a small table beside yoyo's own."""
from __future__ import annotations

import psycopg2.extensions

TIMING_TABLE = "_overlord_migration_timing"


def ensure_timing_table(conn: "psycopg2.extensions.connection") -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TIMING_TABLE} ("
            " migration_id text PRIMARY KEY, duration_ms double precision NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )


def record_timing(conn: "psycopg2.extensions.connection", migration_id: str, seconds: float | None) -> None:
    with conn.cursor() as cur:
        if seconds is not None:
            cur.execute(
                f"INSERT INTO {TIMING_TABLE} (migration_id, duration_ms) VALUES (%s, %s) ON CONFLICT"
                " (migration_id) DO UPDATE SET duration_ms = EXCLUDED.duration_ms, applied_at = now()",
                (migration_id, seconds * 1000),
            )
        else:
            cur.execute(f"DELETE FROM {TIMING_TABLE} WHERE migration_id = %s", (migration_id,))

"""How the plugin's failures reach the user: one paragraph, never a traceback wall."""
from __future__ import annotations

from typing import Callable, NoReturn, TypeVar

import pytest

from ..errors import MigrationError, OverlordError

SYNC_COMMITTED = (
    "overlord_db_sync: the test ended the transaction the fixture rolls back (a raw COMMIT or "
    "ROLLBACK), so its writes would leak into later tests. The database was "
    "rebuilt from the template. Use overlord_fresh_db for tests that must really commit."
)
ASYNC_COMMITTED = (
    "overlord_db: the test ended the fixture's transaction (a raw COMMIT or ROLLBACK), so its writes "
    "would leak into later tests. The database was rebuilt from the template. Use "
    "`async with conn.transaction():` (a savepoint here) or overlord_fresh_db for real commits."
)


def fail_setup(config: pytest.Config, exc: OverlordError) -> NoReturn:
    """Stop the run with one paragraph: every test would otherwise repeat the same error."""
    if hasattr(config, "workerinput"):
        # pytest.exit inside an xdist worker ends in an INTERNALERROR wall; fail the tests instead.
        pytest.fail(f"overlord-db: {exc}", pytrace=False)
    code = pytest.ExitCode.TESTS_FAILED if isinstance(exc, MigrationError) or exc.exit_code == 1 else pytest.ExitCode.USAGE_ERROR
    pytest.exit(f"overlord-db: {exc}", returncode=code)


T = TypeVar("T")


def fail_test(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def guarded(call: Callable[[], T]) -> T:
    """``call()``, or this test failed with the plugin's paragraph (a server gone mid-run, say) and no traceback."""
    try:
        return call()
    except OverlordError as exc:
        error = exc
    fail_test(f"overlord-db: {error}")  # outside the except block: no chained traceback

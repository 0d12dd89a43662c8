"""Waiting for something to become true, in one place: a deadline, a short nap, a clear result."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, interval: float = 0.002) -> T | None:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` seconds pass (None).

    Short intervals on purpose: what we wait for (a postmaster, an exiting
    backend) usually takes a few milliseconds, and the tools' own waits nap
    for 100 ms.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)

"""``wait_for``: poll a predicate until it holds or a deadline passes (integration tests never sleep blindly)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 60.0, what: str = "condition",
             interval: float = 0.2) -> T:
    """Return the first truthy value of ``predicate()``; raise AssertionError after ``timeout`` seconds.

    The error names ``what`` and the last value seen, so a failure says what the cluster looked like.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)

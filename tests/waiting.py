"""The one way tests wait for a condition: poll it, fail with a message when time runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
               interval: float = 0.005, message: str = "condition not met") -> float:
    """Poll ``predicate`` until it is true; return the seconds it took. Raise
    ``AssertionError`` (``message``) after ``timeout`` seconds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{message} within {timeout:g}s")
        time.sleep(interval)
    return time.monotonic() - start


async def async_wait_until(predicate: Callable[[], object], timeout: float = 5.0,
                           interval: float = 0.005,
                           message: str = "condition not met") -> float:
    """:func:`wait_until` on an event loop: other tasks run while it waits."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{message} within {timeout:g}s")
        await asyncio.sleep(interval)
    return time.monotonic() - start

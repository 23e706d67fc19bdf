"""Polling with a deadline: the one way tests wait for something to happen.

``wait_until(condition, what=..., timeout=...)`` calls ``condition`` until it
returns something truthy and returns that value; after ``timeout`` seconds it
fails with an ``AssertionError`` naming ``what`` was awaited and the last value
seen. ``await wait_until_async(...)`` is the same for coroutines: it sleeps
with ``asyncio.sleep`` between checks (the event loop keeps running), and
``condition`` may return an awaitable, which is awaited.

Timeouts are generous on purpose: they bound a failure, they are not the
expected duration.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

WAIT = 10.0
"""Default deadline (s) for something that should happen quickly."""


class _Deadline:
    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def check(self, last: object) -> None:
        if time.monotonic() > self.end:
            raise AssertionError(
                f"timed out after {self.timeout} s waiting for {self.what} (last seen: {last!r})"
            )


def wait_until(
    condition: Callable[[], T], *, what: str, timeout: float = WAIT, interval: float = 0.02
) -> T:
    """Poll ``condition`` until it returns a truthy value (returned); fail after ``timeout``."""
    deadline = _Deadline(what, timeout)
    while True:
        value = condition()
        if value:
            return value
        deadline.check(value)
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], Awaitable[Any]] | Callable[[], Any],
    *,
    what: str,
    timeout: float = WAIT,
    interval: float = 0.02,
) -> Any:
    """``wait_until`` for async tests; ``condition`` may return an awaitable."""
    deadline = _Deadline(what, timeout)
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check(value)
        await asyncio.sleep(interval)

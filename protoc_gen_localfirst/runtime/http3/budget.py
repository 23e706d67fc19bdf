"""A server-wide budget of request bytes buffered for handlers (sans-IO).

The HTTP/3 server receives request data as fast as QUIC delivers it (neither
qh3 nor aioquic lets the application withhold flow-control credit), so bytes a
handler has not read yet wait in its call (``server_call``). Each call holds
some of them; ``BufferBudget`` keeps the total under ``limit``. When a call's
new holding pushes the total over it, the budget names the calls to shed:
the biggest holder first, until the total fits again. Shedding the biggest
(not the newcomer) keeps small, well-behaved calls working while one client
floods the server; the shed call ends with RESOURCE_EXHAUSTED.

No I/O, no clock: ``hold`` and ``drop`` are called by the calls themselves.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["BufferBudget"]

H = TypeVar("H", bound=Hashable)


class BufferBudget(Generic[H]):
    """Bytes held per holder (a call), and which holders to shed over ``limit``.

    ``limit`` None: no server-wide limit (holdings are still counted).
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"BufferBudget limit must be > 0 or None, got {limit!r}")
        self.limit = limit
        self.total = 0
        self.shed = 0
        """Holders shed so far (for tests and reports)."""
        self._held: dict[H, int] = {}

    def held(self, holder: H) -> int:
        return self._held.get(holder, 0)

    def hold(self, holder: H, size: int) -> list[H]:
        """``holder`` now holds ``size`` bytes; returns the holders to shed (biggest first).

        Shed holders are no longer counted: the caller ends them and drops
        their bytes. ``holder`` itself is shed if it is the biggest.
        """
        if size < 0:
            raise ValueError(f"held bytes must be >= 0, got {size}")
        self.total += size - self._held.get(holder, 0)
        if size:
            self._held[holder] = size
        else:
            self._held.pop(holder, None)
        victims: list[H] = []
        while self.limit is not None and self.total > self.limit and self._held:
            biggest = max(self._held, key=self._held.__getitem__)
            self.total -= self._held.pop(biggest)
            victims.append(biggest)
        self.shed += len(victims)
        return victims

    def drop(self, holder: H) -> None:
        """``holder`` ended (or handed its bytes to the handler): it holds nothing now."""
        self.total -= self._held.pop(holder, 0)

    def __len__(self) -> int:
        return len(self._held)

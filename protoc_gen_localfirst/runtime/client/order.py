"""One call's endpoint order (``Order``), made by ``Balancer.plan`` in O(1).

Sans-IO, a value: the tiers as discovery built them, the call's rotation and
two-choices swaps, the ejected endpoints last; read as attempts need it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint

__all__ = ["Order"]


class Order(Sequence[Endpoint]):
    """One call's endpoint order, made in O(1) and read as attempts need it.

    ``tiers`` nearest first, each read from position ``turn`` on (the rotation
    that spreads calls over a tier), with its first two swapped where bit
    ``i`` of ``swapped`` is set (two choices: the less loaded first); then
    ``last`` as it is (ejected endpoints).
    """

    __slots__ = ("_last", "_length", "_swapped", "_tiers", "_turn")

    def __init__(
        self,
        tiers: tuple[Sequence[Endpoint], ...],
        turn: int,
        swapped: int,
        last: tuple[Endpoint, ...] = (),
    ) -> None:
        self._tiers = tiers
        self._turn = turn
        self._swapped = swapped
        self._last = last
        self._length = sum(map(len, tiers)) + len(last)

    def __len__(self) -> int:
        return self._length

    def cycle(self, index: int) -> Endpoint | None:
        """``self[index % len(self)]`` (attempts go round the order), None if empty.

        The one reading of the order: a call's first attempt finds its endpoint
        in the first tier's first pass, without ``__getitem__``'s checks.
        """
        length = self._length
        if not length:
            return None
        index %= length
        for position, group in enumerate(self._tiers):
            size = len(group)
            if index < size:
                if index < 2 and self._swapped >> position & 1:
                    index = 1 - index
                return group[(self._turn + index) % size]
            index -= size
        return self._last[index]

    @overload
    def __getitem__(self, index: int) -> Endpoint: ...

    @overload
    def __getitem__(self, index: slice) -> list[Endpoint]: ...

    def __getitem__(self, index: int | slice) -> Endpoint | list[Endpoint]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(index)
        endpoint = self.cycle(index)
        assert endpoint is not None  # the order is not empty: index is in it
        return endpoint

    def __iter__(self) -> Iterator[Endpoint]:
        return (self[index] for index in range(self._length))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Order({list(self)!r})"

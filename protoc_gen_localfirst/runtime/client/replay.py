"""Buffered request streams, so a client-streaming call can be retried.

gRFC A6: a streaming call stays retryable only while every request message it
sent is still buffered. ``RequestReplay`` pulls messages from the caller's
iterator once, keeps them (up to ``limit_bytes``) and hands each attempt an
iterator that first replays what earlier attempts consumed, then continues
with new messages. An iterator of a superseded attempt stops pulling, so no
message is lost to a dead attempt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Generic

from protoc_gen_localfirst.schema import RequestT

DEFAULT_BUFFER_LIMIT = 256 * 1024
"""Per-call retry buffer, as grpc core's default ``grpc.per_rpc_retry_buffer_size``."""


PULL = object()
"""``_Buffer.at``: the attempt needs a message not pulled yet."""
STOP = object()
"""``_Buffer.at``: the attempt's request stream ends here."""


class _Buffer(Generic[RequestT]):
    """Messages pulled so far, by position; forgets them once over the limit."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.generation = 0
        self.exhausted = False
        self.replayable = True
        self._items: list[RequestT] = []
        self._start = 0  # position of _items[0]; > 0 once the buffer overflowed
        self._total = 0
        self._bytes = 0

    @property
    def total(self) -> int:
        return self._total

    def new_attempt(self) -> int:
        self.generation += 1
        return self.generation

    def get(self, position: int) -> RequestT:
        return self._items[position - self._start]

    def at(self, generation: int, position: int) -> RequestT | object:
        """What attempt ``generation`` sends at ``position``: a message, ``PULL`` or ``STOP``.

        ``PULL``: take the next message from the caller's iterator and hand it to
        ``pulled``. ``STOP``: the stream ended, or a newer attempt superseded this one.
        """
        if generation != self.generation:
            return STOP
        if position < self.total:
            return self.get(position)
        return STOP if self.exhausted else PULL

    def pulled(self, message: RequestT | object) -> RequestT | object:
        """Buffer a message just pulled (or note the end, ``STOP``); returns it."""
        if message is STOP:
            self.exhausted = True
        else:
            self.add(message)  # type: ignore[arg-type]
        return message

    def add(self, message: RequestT) -> None:
        self._total += 1
        if not self.replayable:
            self._start = self._total
            return
        self._items.append(message)
        self._bytes += message.ByteSize()
        if self._bytes > self.limit_bytes:
            # Too much to replay: the call is committed to its current attempt.
            self.replayable = False
            self._items.clear()
            self._start = self._total


class SyncRequestReplay(_Buffer[RequestT]):
    """Replayable request stream over a plain iterable (sync client)."""

    def __init__(self, source: Iterable[RequestT], limit_bytes: int = DEFAULT_BUFFER_LIMIT) -> None:
        super().__init__(limit_bytes)
        self._source = iter(source)
        self._lock = threading.Lock()

    def attempt(self) -> Iterator[RequestT]:
        """The request iterator for a new attempt; earlier ones stop pulling."""
        return self._iterate(self.new_attempt())

    def _iterate(self, generation: int) -> Iterator[RequestT]:
        position = 0
        while True:
            with self._lock:
                message = self.at(generation, position)
                if message is PULL:
                    message = self.pulled(next(self._source, STOP))
            if message is STOP:
                return
            position += 1
            yield message  # type: ignore[misc]


class AsyncRequestReplay(_Buffer[RequestT]):
    """Replayable request stream over an async or plain iterable (asyncio client)."""

    def __init__(
        self,
        source: AsyncIterable[RequestT] | Iterable[RequestT],
        limit_bytes: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        super().__init__(limit_bytes)
        self._source: AsyncIterator[RequestT] = (
            aiter(source) if isinstance(source, AsyncIterable) else _as_async(source)
        )
        self._lock = asyncio.Lock()

    def attempt(self) -> AsyncIterator[RequestT]:
        """The request iterator for a new attempt; earlier ones stop pulling."""
        return self._iterate(self.new_attempt())

    async def _iterate(self, generation: int) -> AsyncIterator[RequestT]:
        position = 0
        while True:
            async with self._lock:
                message = self.at(generation, position)
                if message is PULL:
                    message = self.pulled(await anext(self._source, STOP))
            if message is STOP:
                return
            position += 1
            yield message  # type: ignore[misc]


class SingleRequest(Generic[RequestT]):
    """The request of a unary-request call: every attempt sends the same message."""

    replayable = True

    def __init__(self, request: RequestT) -> None:
        self._request = request

    def attempt(self) -> RequestT:
        return self._request


async def _as_async(source: Iterable[RequestT]) -> AsyncIterator[RequestT]:
    for message in source:
        yield message

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
                if generation != self.generation:
                    return
                if position >= self.total:
                    if self.exhausted:
                        return
                    try:
                        message = next(self._source)
                    except StopIteration:
                        self.exhausted = True
                        return
                    self.add(message)
                else:
                    message = self.get(position)
            position += 1
            yield message


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
                if generation != self.generation:
                    return
                if position >= self.total:
                    if self.exhausted:
                        return
                    try:
                        message = await anext(self._source)
                    except StopAsyncIteration:
                        self.exhausted = True
                        return
                    self.add(message)
                else:
                    message = self.get(position)
            position += 1
            yield message


async def _as_async(source: Iterable[RequestT]) -> AsyncIterator[RequestT]:
    for message in source:
        yield message

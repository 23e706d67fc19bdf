"""``transport="auto"``: HTTP/3 when its handshake works, else HTTP/2, remembered.

``AutoChannel`` wraps an ``H3Channel`` and a lazily made grpc.aio HTTP/2
channel to the same endpoint; ``TransportMemory`` (one per client) remembers
per endpoint until when HTTP/3 is known not to work; ``AutoCall`` picks the
transport, then forwards to that call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime import wire
from protoc_gen_localfirst.runtime.http3.channel import H3Channel
from protoc_gen_localfirst.runtime.http3.connection import ConnectFailed
from protoc_gen_localfirst.runtime.http3.multicallable import MultiCallableChannel

__all__ = ["AutoCall", "AutoChannel", "TransportMemory"]

log = logging.getLogger("protoc_gen_localfirst.runtime.http3.client")


class TransportMemory:
    """Per endpoint: until when HTTP/3 is known not to work (shared by a client's channels)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._h2_until: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def use_h2(self, key: str) -> bool:
        until = self._h2_until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._h2_until[key]
            return False
        return True

    def h3_failed(self, key: str, ttl: float, reason: str) -> None:
        self._h2_until[key] = self._clock() + ttl
        self.reasons[key] = reason

    def h3_works(self, key: str) -> None:
        self._h2_until.pop(key, None)
        self.reasons.pop(key, None)


class AutoChannel(MultiCallableChannel):
    """``transport="auto"``: HTTP/3 when its handshake works, else HTTP/2, remembered.

    Each call first asks ``memory`` whether HTTP/3 failed for this endpoint
    recently (then it goes straight to HTTP/2). Otherwise it waits for the
    HTTP/3 connection (at most ``H3Options.connect_timeout``); if QUIC gets
    no answer (UDP blocked or not served, port unreachable, timeout) the
    endpoint is marked HTTP/2-only for ``fallback_ttl`` seconds, the reason is
    logged once, and the call goes over HTTP/2 with the same TLS setting. A
    TLS failure (a certificate that does not verify) is not a reason to fall
    back: the call fails over HTTP/3 with that reason. A working HTTP/3 connection
    that is later lost is not a reason to fall back: its calls fail over like
    any other UNAVAILABLE, and the next call tries HTTP/3 again.
    """

    def __init__(
        self,
        key: str,
        h3: H3Channel,
        make_h2: Callable[[], grpc.aio.Channel],
        memory: TransportMemory,
    ) -> None:
        self.key = key
        self.h3 = h3
        self._make_h2 = make_h2
        self._h2: grpc.aio.Channel | None = None
        self.memory = memory

    def h2(self) -> grpc.aio.Channel:
        if self._h2 is None:
            self._h2 = self._make_h2()
        return self._h2

    async def choose(self) -> grpc.aio.Channel:
        """The channel the next call should use (see the class docstring)."""
        if self.memory.use_h2(self.key):
            return self.h2()
        try:
            await self.h3.connect()
        except ConnectFailed as error:
            if error.tls_alert is not None:
                # The server answered over QUIC and TLS failed (a certificate that
                # does not verify): never a reason to fall back. The call goes to
                # HTTP/3 and fails with the reason.
                return self.h3
            reason = str(error)
            if self.memory.reasons.get(self.key) != reason:
                log.warning(
                    "HTTP/3 to %s failed (%s); using HTTP/2 for %gs",
                    self.key,
                    reason,
                    self.h3.options.fallback_ttl,
                )
            self.memory.h3_failed(self.key, self.h3.options.fallback_ttl, reason)
            return self.h2()
        self.memory.h3_works(self.key)
        return self.h3

    def _multicallable(
        self, kind: str, method: str, serializer: Any, deserializer: Any
    ) -> _AutoMultiCallable:
        return _AutoMultiCallable(self, kind, method, serializer, deserializer)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self.memory.use_h2(self.key) and self._h2 is not None:
            return self._h2.get_state(try_to_connect)
        return self.h3.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        await (await self.choose()).channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self.h3.close(grace)
        if self._h2 is not None:
            await self._h2.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _AutoMultiCallable:
    def __init__(
        self, channel: AutoChannel, kind: str, method: str, serializer: Any, deserializer: Any
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: wire.MetadataInput | None = None,
        **_: Any,
    ) -> AutoCall:
        return AutoCall(self, request, timeout, metadata)

    async def open(self, request: Any, timeout: float | None, metadata: Any) -> Any:
        started = time.monotonic()
        channel = await self._channel.choose()
        if timeout is not None:
            timeout = max(timeout - (time.monotonic() - started), 0.0)
        multicallable = getattr(channel, self._kind)(
            self._method,
            request_serializer=self._serializer,
            response_deserializer=self._deserializer,
        )
        return multicallable(request, timeout=timeout, metadata=metadata)


class AutoCall:
    """A grpc.aio-like call that first picks HTTP/3 or HTTP/2, then forwards to that call."""

    def __init__(
        self, multicallable: _AutoMultiCallable, request: Any, timeout: float | None, metadata: Any
    ) -> None:
        self._inner: asyncio.Task[Any] = asyncio.ensure_future(
            multicallable.open(request, timeout, metadata)
        )
        self._cancelled = False

    async def _call(self) -> Any:
        return await asyncio.shield(self._inner)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._await().__await__()

    async def _await(self) -> Any:
        return await (await self._call())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        call = await self._call()
        async for message in call:
            yield message

    async def read(self) -> Any:
        return await (await self._call()).read()

    async def initial_metadata(self) -> Any:
        return await (await self._call()).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._call()).trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await (await self._call()).code()
        return code

    async def details(self) -> str:
        details: str = await (await self._call()).details()
        return details

    def cancel(self) -> bool:
        if self._inner.done() and not self._inner.cancelled() and self._inner.exception() is None:
            cancelled: bool = self._inner.result().cancel()
            return cancelled
        if self._cancelled:
            return False
        self._cancelled = True
        self._inner.cancel()
        return True

    def done(self) -> bool:
        if self._inner.done() and not self._inner.cancelled() and self._inner.exception() is None:
            done: bool = self._inner.result().done()
            return done
        return self._inner.done()

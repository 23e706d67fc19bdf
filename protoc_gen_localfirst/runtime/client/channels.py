"""One long-lived channel per endpoint, for both clients.

A channel is made on the first attempt to its endpoint and kept while the
endpoint is in the ready set. When discovery drops the endpoint, its channel
is retired: calls in flight on it finish, then it is closed. An endpoint that
comes back before that gets its channel back.

Threads: discovery changes the pool (``keep_only``) from its own thread, under
the pool's lock. Calls count their channel's use (``acquire``/``release``)
under that lock too when they run in several threads (the blocking client);
on one event loop (``threaded=False``) they need none: a channel found is
used as is, and only a missing one is looked for again under the lock.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import MethodInfo

ChannelT = TypeVar("ChannelT")


class ChannelPool(Generic[ChannelT]):
    """Channels by endpoint address, with multi-callables cached per (address, method)."""

    def __init__(
        self,
        new_channel: Callable[[Endpoint], ChannelT],
        close_channels: Callable[[list[ChannelT]], None],
        *,
        threaded: bool = True,
    ) -> None:
        self._new_channel = new_channel
        self._close_channels = close_channels
        self._lock = threading.Lock()
        self._call_lock = self._lock if threaded else None
        self.active: dict[str, ChannelT] = {}
        self.retired: dict[str, ChannelT] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._callables: dict[tuple[str, str], tuple[ChannelT, Any]] = {}

    def keep_only(self, ready: Collection[str]) -> None:
        """Retire channels of addresses not in ``ready``; revive retired ones that are."""
        with self._lock:
            for address in [a for a in self.active if a not in ready]:
                self.retired[address] = self.active.pop(address)
            for address in [a for a in self.retired if a in ready]:
                self.active[address] = self.retired.pop(address)

    def acquire(self, endpoint: Endpoint, info: MethodInfo[Any, Any]) -> Any:
        """The multi-callable for ``info`` on the endpoint's channel, in use until ``release``.

        ``MethodKind`` values are grpc's multi-callable factory names.
        """
        address = endpoint.address
        if self._call_lock is None:
            channel = self.active.get(address)
            if channel is None:
                with self._lock:
                    channel = self._channel(endpoint)
            self._in_flight[address] += 1
        else:
            with self._call_lock:
                channel = self._channel(endpoint)
                self._in_flight[address] += 1
        key = (address, info.path)
        cached = self._callables.get(key)
        if cached is not None and cached[0] is channel:
            return cached[1]
        # The message classes' own (C) methods: no Python frame per message.
        multicallable = getattr(channel, info.kind.value)(
            info.path,
            request_serializer=info.request_type.SerializeToString,
            response_deserializer=info.response_type.FromString,
        )
        self._callables[key] = (channel, multicallable)
        return multicallable

    def _channel(self, endpoint: Endpoint) -> ChannelT:
        """The endpoint's channel, made if there is none (under the lock)."""
        address = endpoint.address
        channel = self.active.get(address) or self.retired.get(address)
        if channel is None:
            channel = self.active[address] = self._new_channel(endpoint)
        return channel

    def release(self, endpoint: Endpoint) -> None:
        if self._call_lock is None:
            self._in_flight[endpoint.address] -= 1
        else:
            with self._call_lock:
                self._in_flight[endpoint.address] -= 1
        if self.retired:
            self.close_idle_retired()

    def close_idle_retired(self) -> None:
        """Close channels of endpoints that are gone once no call uses them."""
        if not self.retired:
            return
        with self._lock:
            idle = [a for a in self.retired if self._in_flight[a] <= 0]
            channels = [self.retired.pop(a) for a in idle]
            for address in idle:
                del self._in_flight[address]
            gone = set(idle)
            for key in [k for k in self._callables if k[0] in gone]:
                del self._callables[key]
        if channels:
            self._close_channels(channels)

    def take_all(self) -> list[ChannelT]:
        """Every channel, removed from the pool (for the client's close)."""
        with self._lock:
            channels = [*self.active.values(), *self.retired.values()]
            self.active, self.retired = {}, {}
            self._callables.clear()
        return channels

"""One long-lived channel per endpoint, for both clients.

A channel is made on the first attempt to its endpoint and kept while the
endpoint is in the ready set. When discovery drops the endpoint, its channel
is retired: calls in flight on it finish, then it is closed. An endpoint that
comes back before that gets its channel back. ``renew`` replaces every
channel (the client's TLS files changed): new calls get new channels, and the
old ones are closed once the calls in flight on them end.

Calls hold a lease, the ``(channel, multi-callable)`` pair ``acquire`` gives,
and hand it back to ``release``: in-flight calls are counted per channel, so a
replaced channel is closed when its own calls end, whatever its successor
carries.

Threads: discovery (``keep_only``) and the TLS watcher (``renew``) change the
pool from their own threads, under the pool's lock; they only move channels
aside, and channels are closed on the calls' side (the event loop, for the
asyncio client). Calls count their channel's use under that lock too when
they run in several threads (the blocking client); on one event loop
(``threaded=False``) they need none: a channel found is used as is, and only
a missing one is looked for again under the lock.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeAlias, TypeVar

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.schema import MethodInfo

ChannelT = TypeVar("ChannelT")

Lease: TypeAlias = tuple[Any, Any]
"""``(channel, multi-callable)``: what a call uses, and gives back to ``release``."""


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
        """Channels of endpoints that left the ready set (revived if they return)."""
        self.replaced: list[ChannelT] = []
        """Channels ``renew`` replaced: closed once idle, never used again."""
        self.closing_due = False
        """Some channel waits to be closed once idle (read on every call: one attribute)."""
        self._in_flight: collections.Counter[int] = collections.Counter()
        """Calls in flight by ``id(channel)``."""
        self._leases: dict[tuple[str, str], Lease] = {}

    def keep_only(self, ready: Collection[str]) -> None:
        """Retire channels of addresses not in ``ready``; revive retired ones that are."""
        with self._lock:
            for address in [a for a in self.active if a not in ready]:
                self.retired[address] = self.active.pop(address)
            for address in [a for a in self.retired if a in ready]:
                self.active[address] = self.retired.pop(address)
            self._update_closing_due()

    def renew(self) -> None:
        """Replace every channel: the next call to each endpoint makes a new one."""
        with self._lock:
            self.replaced += [*self.active.values(), *self.retired.values()]
            self.active, self.retired = {}, {}
            self._update_closing_due()

    def acquire(self, endpoint: Endpoint, info: MethodInfo[Any, Any]) -> Lease:
        """The endpoint's channel and its multi-callable for ``info``, in use until
        ``release``. ``MethodKind`` values are grpc's multi-callable factory names."""
        address = endpoint.address
        if self._call_lock is None:
            channel = self.active.get(address)
            if channel is None:
                with self._lock:
                    channel = self._channel(endpoint)
            self._in_flight[id(channel)] += 1
        else:
            with self._call_lock:
                channel = self._channel(endpoint)
                self._in_flight[id(channel)] += 1
        key = (address, info.path)
        lease = self._leases.get(key)
        if lease is not None and lease[0] is channel:
            return lease
        # The message classes' own (C) methods: no Python frame per message.
        multicallable = getattr(channel, info.kind.value)(
            info.path,
            request_serializer=info.request_type.SerializeToString,
            response_deserializer=info.response_type.FromString,
        )
        lease = self._leases[key] = (channel, multicallable)
        return lease

    def _channel(self, endpoint: Endpoint) -> ChannelT:
        """The endpoint's channel, made if there is none (under the lock)."""
        address = endpoint.address
        channel = self.active.get(address) or self.retired.get(address)
        if channel is None:
            channel = self.active[address] = self._new_channel(endpoint)
        return channel

    def release(self, lease: Lease) -> None:
        if self._call_lock is None:
            self._in_flight[id(lease[0])] -= 1
        else:
            with self._call_lock:
                self._in_flight[id(lease[0])] -= 1
        if self.closing_due:
            self.close_idle()

    def close_idle(self) -> None:
        """Close retired and replaced channels once no call uses them."""
        if not self.closing_due:
            return
        with self._lock:
            in_flight = self._in_flight
            idle = [a for a, channel in self.retired.items() if in_flight[id(channel)] <= 0]
            channels = [self.retired.pop(a) for a in idle]
            channels += [c for c in self.replaced if in_flight[id(c)] <= 0]
            self.replaced = [c for c in self.replaced if in_flight[id(c)] > 0]
            for channel in channels:
                del in_flight[id(channel)]
            closed = {id(channel) for channel in channels}
            for key in [k for k, lease in self._leases.items() if id(lease[0]) in closed]:
                del self._leases[key]
            self._update_closing_due()
        if channels:
            self._close_channels(channels)

    def _update_closing_due(self) -> None:
        self.closing_due = bool(self.retired or self.replaced)

    def take_all(self) -> list[ChannelT]:
        """Every channel, removed from the pool (for the client's close)."""
        with self._lock:
            channels = [*self.active.values(), *self.retired.values(), *self.replaced]
            self.active, self.retired, self.replaced = {}, {}, []
            self._update_closing_due()
            self._leases.clear()
        return channels

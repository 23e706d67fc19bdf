"""A started server: ``Server`` (address, health, drain, stop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc.aio

from protoc_gen_localfirst.runtime.server.announce import NodeAnnouncer
from protoc_gen_localfirst.runtime.server.binding import Binding
from protoc_gen_localfirst.runtime.server.health import HealthServicer
from protoc_gen_localfirst.runtime.server.listen import format_address

if TYPE_CHECKING:  # loaded only with http3=True (see bootstrap)
    from protoc_gen_localfirst.runtime.http3.server import H3Server

__all__ = ["REFUSAL_WINDOW", "Server"]

REFUSAL_WINDOW = 1.0
"""Seconds a stopping server refuses new calls with UNAVAILABLE before grpc stops.

Longer than a client's first ejection (0.5 s), so clients that were refused
stop sending here before grpc's own stop begins."""


class Server:
    """A started server. ``grpc_server`` is the underlying ``grpc.aio.Server``."""

    port: int
    node: str

    def __init__(
        self,
        *,
        grpc_server: grpc.aio.Server,
        health: HealthServicer,
        bindings: Sequence[Binding],
        host: str,
        port: int,
        node: str,
        drain_delay: float,
        grace: float,
        announcer: NodeAnnouncer,
        h3_server: H3Server | None = None,
        h3_announcer: NodeAnnouncer | None = None,
        health_server: grpc.aio.Server | None = None,
        health_port: int | None = None,
    ) -> None:
        self.grpc_server = grpc_server
        self.health_server = health_server
        self.health_port = health_port
        """The plaintext health-only listener's port (``health_port``), else None."""
        self.h3_server = h3_server
        """The HTTP/3 listener (``http3=True``), else None."""
        self._announcer = announcer
        self._h3_announcer = h3_announcer
        self.health = health
        self.bindings = tuple(bindings)
        self.host = host
        self.port = port
        self.node = node
        self.drain_delay = drain_delay
        self.grace = grace
        self._stopping: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._draining = False

    @property
    def address(self) -> str:
        """``host:port`` as listened on, e.g. ``[::]:50051`` or ``127.0.0.2:41235``."""
        return format_address(self.host, self.port)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(b.service.name for b in self.bindings)

    @property
    def draining(self) -> bool:
        """Whether ``drain`` or ``stop`` has begun."""
        return self._draining

    async def drain(self) -> None:
        """Health NOT_SERVING for all, wait ``drain_delay``, then ``stop(grace)``.

        The wait ends early if ``stop`` is called meanwhile (``serve`` does that
        on a second SIGTERM/SIGINT).
        """
        self._draining = True
        await self.health.enter_graceful_shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), self.drain_delay)
        await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop: refuse new calls, give in-flight ones ``grace`` seconds, cancel the rest.

        ``grace=None`` means the configured ``grace`` option; 0 stops at once.
        Health turns NOT_SERVING first. Calling again waits for the first stop.
        """
        self._stop_requested.set()
        if self._stopping is None:
            seconds = self.grace if grace is None else grace
            self._stopping = asyncio.ensure_future(self._stop(seconds))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        self._draining = True
        if self.h3_server is not None:
            self.h3_server.goaway()
        await self.health.enter_graceful_shutdown()
        self.health.close_watches()
        # grpc core cancels calls that reached it but no handler yet when it
        # stops (seen as CANCELLED, handler never ran, which a client cannot
        # safely retry). So first refuse new calls ourselves with UNAVAILABLE
        # (trailers-only: clients retry elsewhere and eject this endpoint),
        # let that quiet the connections, then stop with the grace left.
        window = min(REFUSAL_WINDOW, grace / 2)
        if window > 0:
            self._announcer.refusing = True
            if self._h3_announcer is not None:
                self._h3_announcer.refusing = True
            await asyncio.sleep(window)
        stops = [self.grpc_server.stop(grace - window)]
        if self.h3_server is not None:
            stops.append(self.h3_server.stop(grace - window))
        await asyncio.gather(*stops)
        if self.health_server is not None:  # last: probes see NOT_SERVING until the end
            await self.health_server.stop(0)

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self.grpc_server.wait_for_termination()
        if self.h3_server is not None:
            await self.h3_server.wait_closed()

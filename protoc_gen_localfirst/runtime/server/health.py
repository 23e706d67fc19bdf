"""The health service every server serves (``grpc.health.v1.Health``)."""

from __future__ import annotations

import asyncio
from typing import Any

# grpcio-health-checking ships no type hints (and typeshed has no stubs for it).
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import (
    HealthServicer as _AioHealthServicer,
)

__all__ = ["HealthServicer"]


class HealthServicer(_AioHealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer whose Watch streams end on ``close_watches``.

    Without that, every open Watch stream (grpc client-side health checking
    keeps one per connection) would hold ``stop(grace)`` for the whole grace.
    The stream sends NOT_SERVING first, then ends with OK.
    """

    def __init__(self) -> None:
        super().__init__()
        self._closing = asyncio.Event()

    def close_watches(self) -> None:
        self._closing.set()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({watch, closing}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()
        finally:
            for task in (watch, closing):
                task.cancel()
            await asyncio.gather(watch, closing, return_exceptions=True)

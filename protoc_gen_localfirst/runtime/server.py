"""Server bootstrap: serve servicers from a method table over HTTP/2 (grpc.aio).

CONTRACT STUB - the signatures below are what generated code calls; bodies
are being written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypedDict

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.methods import ServiceInfo

ServicerContext = grpc.aio.ServicerContext


class ServeOptions(TypedDict, total=False):
    """Keyword options of ``serve``/``start_server``; every key is optional."""

    host: str
    port: int
    node: str | None
    drain_delay: float
    grace: float
    max_connection_age: float | None
    max_connection_age_grace: float
    max_message_size: int
    server_credentials: grpc.ServerCredentials | None
    handle_signals: bool


class Servicer:
    """Base of generated servicer classes; ``SERVICE`` names their service."""

    SERVICE: ClassVar[ServiceInfo]


@dataclass(frozen=True)
class Binding:
    service: ServiceInfo
    servicer: object


class Server:
    port: int
    node: str | None

    async def drain(self) -> None:
        raise NotImplementedError

    async def stop(self, grace: float | None = None) -> None:
        raise NotImplementedError

    async def wait_for_termination(self) -> None:
        raise NotImplementedError


def bind_servicers(
    services: Sequence[ServiceInfo], servicers: Sequence[object]
) -> list[Binding]:
    raise NotImplementedError


async def start_server(bindings: Sequence[Binding], **options: Any) -> Server:
    raise NotImplementedError


async def serve(bindings: Sequence[Binding], **options: Any) -> None:
    raise NotImplementedError


async def abort_unimplemented(context: ServicerContext[Any, Any]) -> NoReturn:
    raise NotImplementedError


def unimplemented_stream(context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
    raise NotImplementedError

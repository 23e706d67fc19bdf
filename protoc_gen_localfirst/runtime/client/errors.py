"""The error a call raises when its attempts are used up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt of a call did: where it went and what came back."""

    endpoint: Endpoint
    code: grpc.StatusCode
    details: str

    def describe(self) -> str:
        return f"{self.endpoint.describe()}: {self.code.name} {self.details!r}"


class CallFailedError(grpc.aio.AioRpcError):
    """Every attempt of a call failed, or its deadline ran out between attempts.

    A ``grpc.RpcError`` (and ``grpc.aio.AioRpcError``) like grpc's own errors:
    ``code()`` is the last attempt's status (DEADLINE_EXCEEDED when the overall
    deadline ended the call) and ``details()`` names every endpoint tried and
    what it returned. ``attempts`` holds the same as data.
    """

    def __init__(
        self,
        *,
        method: str,
        code: grpc.StatusCode,
        summary: str,
        attempts: Sequence[AttemptRecord],
        trailing_metadata: grpc.aio.Metadata | None = None,
    ) -> None:
        tried = "; ".join(a.describe() for a in attempts)
        details = f"{method}: {summary}; " + (
            f"tried {tried}" if tried else "no endpoint was tried"
        )
        super().__init__(
            code,
            grpc.aio.Metadata(),
            trailing_metadata or grpc.aio.Metadata(),
            details=details,
        )
        self.method = method
        self.attempts: tuple[AttemptRecord, ...] = tuple(attempts)

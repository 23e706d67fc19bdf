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

    def describe(self, times: int = 1) -> str:
        repeated = f", {times} attempts" if times > 1 else ""
        return f"{self.endpoint.describe()}{repeated}: {self.code.name} {self.details!r}"


def describe_attempts(attempts: Sequence[AttemptRecord]) -> str:
    """The attempts in order; a run of attempts with the same endpoint and answer is
    named once with its count (a refused certificate, retried, says so once)."""
    runs: list[tuple[AttemptRecord, int]] = []
    for record in attempts:
        if runs and _same(runs[-1][0], record):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((record, 1))
    return "; ".join(record.describe(times) for record, times in runs)


def _same(a: AttemptRecord, b: AttemptRecord) -> bool:
    return (a.endpoint.address, a.code, a.details) == (b.endpoint.address, b.code, b.details)


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
        tried = describe_attempts(attempts)
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

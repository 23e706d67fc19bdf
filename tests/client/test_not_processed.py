"""When a failed attempt provably left the request unprocessed (retry-safe for any rpc)."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.retry import (
    CallAttempts,
    RetryPolicy,
    RetryThrottle,
    RetryThrottling,
    provably_not_processed,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint
from protoc_gen_localfirst.runtime.identity import DRAINING_KEY
from protoc_gen_localfirst.schema import Idempotency, MethodInfo, MethodKind

NODE_TRAILER = (("localfirst-node", "node-a"),)


def error(
    code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=details
    )


@pytest.mark.parametrize(
    ("failure", "unprocessed"),
    [
        (
            error(
                grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: ..."
            ),
            True,
        ),
        (error(grpc.StatusCode.UNAVAILABLE, "HTTP/3 request not sent: no QUIC handshake"), True),
        (
            error(
                grpc.StatusCode.UNAVAILABLE,
                "stream reset by the server (HTTP/3 error H3_REQUEST_REJECTED)",
            ),
            True,
        ),
        (
            error(grpc.StatusCode.UNAVAILABLE, "shedding load", NODE_TRAILER),
            True,
        ),  # the server said so
        (error(grpc.StatusCode.UNAVAILABLE, "Socket closed"), False),  # reset after sending
        (error(grpc.StatusCode.UNAVAILABLE, "Stream removed"), False),
        (error(grpc.StatusCode.DEADLINE_EXCEEDED, "failed to connect to all addresses"), False),
        (error(grpc.StatusCode.INTERNAL, "boom", NODE_TRAILER), False),
    ],
)
def test_provably_not_processed(failure: grpc.aio.AioRpcError, unprocessed: bool) -> None:
    assert provably_not_processed(failure) is unprocessed


def attempts(idempotency: Idempotency, throttle: RetryThrottle | None = None) -> CallAttempts:
    endpoint = Endpoint("127.0.0.1", 1, node="node-a")
    call = CallAttempts(
        method="/t.S/M",
        balancer=Balancer([endpoint, Endpoint("127.0.0.2", 1)], node="node-a", zone=None),
        policy=RetryPolicy(),
        timeout=None,
        throttle=throttle,
    )
    call.info = MethodInfo(
        "t.S", "M", MethodKind.UNARY_UNARY, StringValue, StringValue, idempotency
    )
    return call


def test_reset_after_sending_is_retried_only_for_idempotent_rpcs() -> None:
    reset = error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    unknown = attempts(Idempotency.IDEMPOTENCY_UNKNOWN)
    assert not unknown.failed(unknown.next_endpoint(), reset).retryable
    safe = attempts(Idempotency.NO_SIDE_EFFECTS)
    assert safe.failed(safe.next_endpoint(), reset).retryable


def test_draining_refusals_do_not_spend_the_retry_budget() -> None:
    throttle = RetryThrottle(RetryThrottling(max_tokens=2, token_ratio=0.1))
    refusal = error(
        grpc.StatusCode.UNAVAILABLE,
        "server is shutting down",
        (*NODE_TRAILER, (DRAINING_KEY, "true")),
    )
    for _ in range(5):
        call = attempts(Idempotency.IDEMPOTENCY_UNKNOWN, throttle)
        assert call.failed(call.next_endpoint(), refusal).retryable
    shed = error(grpc.StatusCode.UNAVAILABLE, "shedding load", NODE_TRAILER)
    call = attempts(Idempotency.IDEMPOTENCY_UNKNOWN, throttle)
    assert not call.failed(call.next_endpoint(), shed).retryable  # 2 -> 1 token: at the limit

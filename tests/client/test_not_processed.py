"""When a failed attempt provably left the request unprocessed (retry-safe for any rpc)."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.client.actions import Attempt, CallSettings, GiveUp
from protoc_gen_localfirst.runtime.client.balancer import Balancer
from protoc_gen_localfirst.runtime.client.call import CallState
from protoc_gen_localfirst.runtime.client.failures import Failure, provably_not_processed
from protoc_gen_localfirst.runtime.client.observers import ClientEvents
from protoc_gen_localfirst.runtime.client.policy import RetryPolicy
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottle, RetryThrottling
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


class OneCall:
    """A call of a unary rpc with this idempotency over two endpoints, run by hand."""

    def __init__(self, idempotency: Idempotency, throttle: RetryThrottle | None = None) -> None:
        endpoint = Endpoint("127.0.0.1", 1, node="node-a")
        policy = RetryPolicy()
        settings = CallSettings(
            info=MethodInfo(
                "t.S", "M", MethodKind.UNARY_UNARY, StringValue, StringValue, idempotency
            ),
            policy=policy,
            retryable_codes=policy.retryable_codes,
            hedging=False,
            balancer=Balancer([endpoint, Endpoint("127.0.0.2", 1)], node="node-a", zone=None),
            events=ClientEvents(),
            throttle=throttle,
            no_endpoints_reason=lambda: "no endpoints",
        )
        self.state = CallState(settings, timeout=None)

    def retried_after(self, failure: grpc.aio.AioRpcError) -> bool:
        """Whether, after the first attempt failed with ``failure``, another attempt follows."""
        first = self.state.next_action()
        assert isinstance(first, Attempt)
        self.state.attempt_failed(first, failure)
        return not isinstance(self.state.next_action(), GiveUp)


def test_reset_after_sending_is_retried_only_for_idempotent_rpcs() -> None:
    reset = error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert not OneCall(Idempotency.IDEMPOTENCY_UNKNOWN).retried_after(reset)
    assert OneCall(Idempotency.NO_SIDE_EFFECTS).retried_after(reset)


def test_draining_refusals_do_not_spend_the_retry_budget() -> None:
    throttle = RetryThrottle(RetryThrottling(max_tokens=2, token_ratio=0.1))
    refusal = error(
        grpc.StatusCode.UNAVAILABLE,
        "server is shutting down",
        (*NODE_TRAILER, (DRAINING_KEY, "true")),
    )
    for _ in range(5):
        assert OneCall(Idempotency.IDEMPOTENCY_UNKNOWN, throttle).retried_after(refusal)
    shed = error(grpc.StatusCode.UNAVAILABLE, "shedding load", NODE_TRAILER)
    call = OneCall(Idempotency.IDEMPOTENCY_UNKNOWN, throttle)
    assert not call.retried_after(shed)  # 2 -> 1 token: at the limit


GRPC_PICK_FAILURE = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:443: "


@pytest.mark.parametrize(
    ("reason", "transient"),
    [
        ("Connection refused", True),
        (
            (
                "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
                "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed certificate"
            ),
            False,
        ),
        (
            (
                "Custom verification check failed with error: UNAUTHENTICATED: Hostname "
                "Verification Check failed."
            ),
            False,
        ),
    ],
)
def test_a_refused_certificate_is_unsent_but_not_transient(reason: str, transient: bool) -> None:
    """grpc's words (1.85) for a connection that failed, and for TLS refusals: no request
    was sent either way, but only the first may pass by itself, so only it is retried
    transparently until the deadline (the others get the policy's attempts)."""
    failure = Failure.of(error(grpc.StatusCode.UNAVAILABLE, GRPC_PICK_FAILURE + reason))
    assert failure.not_processed
    assert failure.not_sent is transient

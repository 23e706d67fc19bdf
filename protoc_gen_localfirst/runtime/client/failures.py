"""What a failed attempt tells us: status, trailers, pushback, whether it was processed.

Sans-IO: reads the status, details and trailing metadata a ``grpc.RpcError``
already holds (grpc.aio, blocking grpc and our HTTP/3 client raise the same
shapes) and turns them into plain facts the call state machine decides on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.client.policy import NOT_PROCESSED_CODES
from protoc_gen_localfirst.runtime.identity import DRAINING_KEY, OVERLOADED_KEY
from protoc_gen_localfirst.runtime.wire.status import NOT_SENT

PUSHBACK_KEY = "grpc-retry-pushback-ms"

DO_NOT_RETRY = -1.0
"""A pushback that says "do not retry" (negative or unparsable, gRFC A6)."""

# Details of transport failures that happened before the request was sent:
# grpc core's pick failure when no connection could be made, our HTTP/3
# client's connect/stream-open failures, and an HTTP/3 stream the server
# rejected unprocessed (RFC 9114: H3_REQUEST_REJECTED).
REFUSED_STREAM = "Received RST_STREAM with error code 7"
"""grpc's words for HTTP/2 REFUSED_STREAM: the server did not process the stream
(RFC 9113 8.7), e.g. one opened before the client saw SETTINGS_MAX_CONCURRENT_STREAMS."""

_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    NOT_SENT,
    "H3_REQUEST_REJECTED",
    REFUSED_STREAM,
)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as facts."""

    error: grpc.RpcError
    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, Any], ...]
    pushback: float | None
    """Seconds the server asked to wait, ``DO_NOT_RETRY``, or None."""
    draining: bool
    """The server refused because it is stopping (not overload)."""
    overloaded: bool
    """The server refused it unprocessed: at its concurrency limit (admission control)."""
    not_processed: bool
    """The request provably never reached a handler (see ``provably_not_processed``)."""
    not_sent: bool
    """The attempt never left the client (no connection, HTTP/3 not sent, stream refused)
    for a reason that may pass (not a TLS refusal): gRFC A6's transparent retry case."""

    @property
    def refused_stream(self) -> bool:
        """The server refused the stream at its concurrent-stream limit: busy, not broken."""
        return self.code in NOT_PROCESSED_CODES and REFUSED_STREAM in self.details

    @property
    def not_taken(self) -> bool:
        """Never sent, or refused by a stopping server before it ran ("call another
        replica"): either way no replica has it, and waiting for others is safe."""
        return self.not_sent or (self.draining and self.not_processed)

    @classmethod
    def of(cls, error: grpc.RpcError) -> Failure:
        code, details = status_of(error)
        trailers = trailing_pairs(error)
        return cls(
            error=error,
            code=code,
            details=details,
            trailers=trailers,
            pushback=pushback(trailers),
            draining=any(key == DRAINING_KEY for key, _ in trailers),
            overloaded=any(key == OVERLOADED_KEY for key, _ in trailers),
            not_processed=_not_processed(code, details, trailers),
            not_sent=_transient_unsent(code, details),
        )


def provably_not_processed(error: grpc.RpcError) -> bool:
    """Whether a failed attempt's request provably never reached a handler.

    UNAVAILABLE alone does not prove it: a connection reset after the request
    was sent ("Socket closed") also surfaces as UNAVAILABLE, and the handler
    may have run (the chaos benchmark saw non-idempotent calls run twice).
    Proof is either a failure before sending (see ``_NOT_SENT_MARKERS``) or a
    status the server itself answered (its trailers arrived: our bootstrap
    always sends some) choosing UNAVAILABLE, which by gRPC convention means
    "not processed, try again".
    """
    return Failure.of(error).not_processed


def _not_processed(
    code: grpc.StatusCode, details: str, trailers: Sequence[tuple[str, Any]]
) -> bool:
    return _not_sent(code, details) or (code in NOT_PROCESSED_CODES and len(trailers) > 0)


def _not_sent(code: grpc.StatusCode, details: str) -> bool:
    return code in NOT_PROCESSED_CODES and any(marker in details for marker in _NOT_SENT_MARKERS)


# TLS refusals (a certificate that does not verify, a handshake alert): the request
# was not sent either, but trying again will not change the certificate.
_SECURITY_MARKERS = (
    "TLS alert",  # our HTTP/3 client
    "Ssl handshake failed",  # grpc core, older releases
    "Tls handshake failed",  # grpc core: the chain does not verify, the peer hangs up
    "CERTIFICATE_VERIFY_FAILED",
    "Hostname Verification Check failed",  # grpc core: the name is not in the certificate
)


def _transient_unsent(code: grpc.StatusCode, details: str) -> bool:
    return _not_sent(code, details) and not any(m in details for m in _SECURITY_MARKERS)


def pushback(trailers: Sequence[tuple[str, Any]]) -> float | None:
    """``grpc-retry-pushback-ms`` from the trailers: seconds, ``DO_NOT_RETRY``, or None."""
    for key, value in trailers:
        if key == PUSHBACK_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            try:
                millis = int(text.strip())
            except ValueError:
                return DO_NOT_RETRY
            return DO_NOT_RETRY if millis < 0 else millis / 1000.0
    return None


def status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    status = code() if callable(code) else None
    text = details() if callable(details) else str(error)
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, text or ""


def trailing_pairs(error: grpc.RpcError) -> tuple[tuple[str, Any], ...]:
    """The error's trailing metadata as (key, value) pairs; none if it has none."""
    trailing = getattr(error, "trailing_metadata", None)
    return tuple(trailing() or ()) if callable(trailing) else ()


def headers_arrived(error: grpc.RpcError) -> bool:
    """Whether response headers arrived before the failure (the call is then committed).

    grpc exposes no "trailers-only" flag; a response that carried headers has
    non-empty initial metadata when the server put anything in it, as our
    server bootstrap always does (its node name).
    """
    initial_metadata = getattr(error, "initial_metadata", None)
    return callable(initial_metadata) and bool(initial_metadata())


def as_aio_metadata(pairs: Sequence[tuple[str, Any]]) -> grpc.aio.Metadata:
    return grpc.aio.Metadata(*pairs)

"""gRPC status on the wire: codes, ``grpc-message`` text, errors, HTTP/3 error codes.

* ``status_from_int``/``status_from_http``/``status_from_h3_error``: a
  ``grpc.StatusCode`` from a ``grpc-status`` number, from a response's HTTP
  status (PROTOCOL-HTTP2's table), from a stream reset's HTTP/3 error code
  (gRFC G2).
* ``grpc-message`` is UTF-8, percent-encoded for bytes outside 0x20-0x7E and
  for ``%``; decoding is lenient (a bad escape stays literal, bad UTF-8 is
  replaced), as the spec asks.
* ``WireError(message, status=..., http_status=200, h3_error=None)``:
  ``h3_error`` set means "the stream is malformed: reset it with this HTTP/3
  error code"; otherwise answer with ``status`` (trailers-only, with
  ``http_status`` as ``:status``).
* The details texts both servers (HTTP/2 and HTTP/3) and both clients answer
  with, defined once: ``METHOD_NOT_FOUND``, ``DEADLINE_EXCEEDED``,
  ``SHUTTING_DOWN``.
"""

from __future__ import annotations

import enum

import grpc

METHOD_NOT_FOUND = "Method not found!"
"""grpc's own details text for an unknown method; kept for familiarity."""
DEADLINE_EXCEEDED = "Deadline Exceeded"
"""grpc's details text for a call whose deadline passed."""
NOT_SENT = "HTTP/3 request not sent"
"""Start of the details of an HTTP/3 call that failed before its request left the
client: clients read it as "provably not processed" (safe to send elsewhere)."""

SHUTTING_DOWN = "server is shutting down; call another replica"
"""Details of the UNAVAILABLE a stopping server answers new or cut-off calls with."""


class H3Error(enum.IntEnum):
    """HTTP/3 error codes (RFC 9114 section 8.1)."""

    NO_ERROR = 0x0100
    GENERAL_PROTOCOL_ERROR = 0x0101
    INTERNAL_ERROR = 0x0102
    STREAM_CREATION_ERROR = 0x0103
    CLOSED_CRITICAL_STREAM = 0x0104
    FRAME_UNEXPECTED = 0x0105
    FRAME_ERROR = 0x0106
    EXCESSIVE_LOAD = 0x0107
    ID_ERROR = 0x0108
    SETTINGS_ERROR = 0x0109
    MISSING_SETTINGS = 0x010A
    REQUEST_REJECTED = 0x010B
    REQUEST_CANCELLED = 0x010C
    REQUEST_INCOMPLETE = 0x010D
    MESSAGE_ERROR = 0x010E
    CONNECT_ERROR = 0x010F
    VERSION_FALLBACK = 0x0110


class WireError(Exception):
    """A protocol violation or a request the server must refuse.

    ``status``/``str(self)``: the gRPC status and message to answer with (or,
    on the client, to fail the call with). ``http_status``: the ``:status`` of
    that answer (415 for a non-gRPC content type, 405 for a non-POST). When
    ``h3_error`` is not None the stream is malformed and must be reset with
    that HTTP/3 error code instead of answered.
    """

    def __init__(
        self,
        message: str,
        *,
        status: grpc.StatusCode = grpc.StatusCode.INTERNAL,
        http_status: int = 200,
        h3_error: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.http_status = http_status
        self.h3_error = h3_error


# ---------------------------------------------------------------------------
# Status codes


_STATUS_BY_INT: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_from_int(value: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` numbered ``value``; UNKNOWN for numbers gRPC lacks."""
    return _STATUS_BY_INT.get(value, grpc.StatusCode.UNKNOWN)


_HTTP_TO_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


def status_from_http(http_status: int) -> grpc.StatusCode:
    """PROTOCOL-HTTP2's mapping for a response without ``grpc-status``."""
    return _HTTP_TO_STATUS.get(http_status, grpc.StatusCode.UNKNOWN)


def status_from_h3_error(error_code: int) -> grpc.StatusCode:
    """gRFC G2's mapping of a stream reset's HTTP/3 error code to a status.

    H3_REQUEST_CANCELLED -> CANCELLED (on a server: the client cancelled),
    H3_REQUEST_REJECTED -> UNAVAILABLE (not processed; safe to retry),
    H3_EXCESSIVE_LOAD -> RESOURCE_EXHAUSTED, every other HTTP/3 code ->
    INTERNAL. Codes outside the HTTP/3 range (QUIC transport errors, e.g. a
    connection closed under the call) -> UNAVAILABLE.
    """
    if error_code == H3Error.REQUEST_CANCELLED:
        return grpc.StatusCode.CANCELLED
    if error_code == H3Error.REQUEST_REJECTED:
        return grpc.StatusCode.UNAVAILABLE
    if error_code == H3Error.EXCESSIVE_LOAD:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if H3Error.NO_ERROR <= error_code <= H3Error.VERSION_FALLBACK:
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------------
# grpc-message

_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}
_HEX = b"0123456789abcdefABCDEF"


def encode_grpc_message(message: str) -> bytes:
    """Percent-encode ``message`` (UTF-8) for the ``grpc-message`` header."""
    raw = message.encode("utf-8", "surrogatepass")
    if all(byte in _UNRESERVED for byte in raw):
        return raw
    return b"".join(bytes((byte,)) if byte in _UNRESERVED else b"%%%02X" % byte for byte in raw)


def decode_grpc_message(value: bytes | str) -> str:
    """Decode a ``grpc-message``: lenient, never raises.

    ``%XX`` with two hex digits becomes that byte; anything else (a lone
    ``%``, bad hex) stays as it is; invalid UTF-8 becomes U+FFFD.
    """
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25 and i + 2 < len(raw) and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", "replace")

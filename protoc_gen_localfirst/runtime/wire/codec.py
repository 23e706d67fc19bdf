"""Sans-IO gRPC wire protocol shared by the HTTP/3 server and client.

No sockets, no asyncio: codecs and validators that take header lists and
bytes and return values or raise ``WireError``, in the style of h11 and
aioquic's ``h3/connection.py``. Both HTTP/3 sides (``h3_server`` and the
client transport) use this module; its public names below are a stable API
(changes are additive only).

Header lists are HTTP/3 header lists as aioquic/qh3 use them:
``list[tuple[bytes, bytes]]`` (``Headers``), names lower case.

API summary
-----------
Framing (PROTOCOL-HTTP2 "Length-Prefixed-Message")::

    encode_message(data: bytes, *, compressed: bool = False) -> bytes
    MessageDecoder(max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                   encoding: str | None = None)
        .feed(data: bytes) -> list[bytes]   # complete messages, in order
        .end() -> None                      # at end of stream: raises on a partial message
        .buffered -> int                    # bytes held for an incomplete message

Requests::

    build_request_headers(path, *, authority, timeout=None, metadata=(),
                          scheme="https", content_type=CONTENT_TYPE,
                          user_agent=None, encoding=None) -> Headers
    parse_request_headers(headers) -> RequestHead     # server side, raises WireError

Responses::

    build_response_headers(metadata=(), *, content_type=CONTENT_TYPE) -> Headers
    build_trailers(code, message="", metadata=()) -> Headers
    build_trailers_only(code, message="", metadata=(), *, http_status=200) -> Headers
    parse_response_headers(headers) -> ResponseHead   # client side; .status set if trailers-only
    parse_trailers(headers) -> Status                 # client side

Codecs::

    encode_timeout(seconds: float) -> bytes ; decode_timeout(bytes | str) -> float
    encode_grpc_message(str) -> bytes ; decode_grpc_message(bytes | str) -> str
    encode_metadata(pairs) -> Headers ; decode_metadata(headers) -> Metadata
    status_from_http(http_status: int) -> grpc.StatusCode
    status_from_h3_error(error_code: int) -> grpc.StatusCode
    status_from_int(value: int) -> grpc.StatusCode

Errors: ``WireError(message, status=..., http_status=200, h3_error=None)``.
``h3_error`` set means "the stream is malformed: reset it with this HTTP/3
error code"; otherwise answer with ``status`` (trailers-only, with
``http_status`` as ``:status``). ``MessageTooLarge`` (RESOURCE_EXHAUSTED) and
``TruncatedMessage`` (INTERNAL) are subclasses for the framing cases.

Choices
-------
* ``-bin`` metadata is emitted as **unpadded** base64 (standard alphabet), as
  PROTOCOL-HTTP2 recommends; padded and unpadded values are both accepted.
* Received metadata (``decode_metadata``) leaves out pseudo-headers, every
  ``grpc-*`` key, ``content-type`` and ``te``; ``user-agent`` and anything
  else stay, as grpc's ``invocation_metadata()`` shows them. Values of
  ``-bin`` keys are ``bytes``, others ``str``.
* ``grpc-message`` is UTF-8, percent-encoded for bytes outside 0x20-0x7E and
  for ``%``; decoding is lenient (a bad escape stays literal, bad UTF-8 is
  replaced), as the spec asks.
* ``grpc-timeout`` is encoded in the finest unit whose value fits 8 digits,
  rounding up, so the peer never sees a shorter deadline than ours.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import grpc

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "H3Error",
    "Header",
    "Headers",
    "MessageDecoder",
    "MessageTooLarge",
    "Metadata",
    "MetadataInput",
    "RequestHead",
    "ResponseHead",
    "Status",
    "TruncatedMessage",
    "WireError",
    "build_request_headers",
    "build_response_headers",
    "build_trailers",
    "build_trailers_only",
    "decode_grpc_message",
    "decode_metadata",
    "decode_timeout",
    "encode_grpc_message",
    "encode_message",
    "encode_metadata",
    "encode_timeout",
    "is_grpc_content_type",
    "parse_request_headers",
    "parse_response_headers",
    "parse_trailers",
    "status_from_h3_error",
    "status_from_http",
    "status_from_int",
]

Header = tuple[bytes, bytes]
Headers = list[Header]
Metadata = tuple[tuple[str, str | bytes], ...]
"""Metadata as grpc shows it: (key, value) pairs, ``bytes`` values for ``-bin`` keys."""
MetadataInput = Iterable[tuple[str, str | bytes]]
"""What the builders accept: pairs, a ``grpc.aio.Metadata``, a ``Metadata``."""

CONTENT_TYPE = b"application/grpc"
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
PREFIX_LENGTH = 5
"""1-byte compressed flag + 4-byte big-endian length."""
MAX_TIMEOUT_DIGITS = 8


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


class MessageTooLarge(WireError):
    """A message's length prefix exceeds the maximum: RESOURCE_EXHAUSTED."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"received message larger than max ({length} vs. {limit})",
            status=grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        self.length = length
        self.limit = limit


class TruncatedMessage(WireError):
    """The stream ended inside a length-prefixed message: INTERNAL."""

    def __init__(self, buffered: int, expected: int | None) -> None:
        wanted = f"{expected}-byte message" if expected is not None else "5-byte prefix"
        super().__init__(
            f"stream ended with a truncated message ({buffered} bytes of a {wanted})",
            status=grpc.StatusCode.INTERNAL,
        )


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
# Length-prefixed messages


def encode_message(data: bytes, *, compressed: bool = False) -> bytes:
    """``data`` as one length-prefixed message (flag byte + 4-byte length)."""
    if len(data) > 0xFFFFFFFF:
        raise ValueError(f"message of {len(data)} bytes does not fit a gRPC length prefix")
    return (b"\x01" if compressed else b"\x00") + len(data).to_bytes(4, "big") + data


def _decompress(encoding: str, data: bytes, limit: int | None) -> bytes:
    if encoding == "gzip":
        wbits = 31
    elif encoding == "deflate":
        wbits = 15
    else:
        raise WireError(
            f"message compressed with unsupported grpc-encoding {encoding!r}",
            status=grpc.StatusCode.UNIMPLEMENTED,
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(data, (limit + 1) if limit is not None else 0)
    except zlib.error as error:
        raise WireError(f"cannot decompress {encoding} message: {error}") from None
    if limit is not None and len(out) > limit:
        raise MessageTooLarge(len(out), limit)
    return out


class MessageDecoder:
    """Incremental decoder of length-prefixed gRPC messages.

    Feed DATA payloads of any size with ``feed``; it returns the messages
    completed so far. Call ``end()`` when the stream ends: it raises
    ``TruncatedMessage`` if a partial message is buffered. A length prefix
    over ``max_message_size`` raises ``MessageTooLarge`` as soon as the
    prefix arrives (the body is never buffered). A compressed flag without a
    ``grpc-encoding`` (``encoding`` None or ``"identity"``) raises
    ``WireError`` INTERNAL; ``gzip`` and ``deflate`` are decompressed, other
    encodings raise UNIMPLEMENTED. After an error the decoder is poisoned:
    every later ``feed``/``end`` raises the same error.
    """

    def __init__(
        self,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        encoding: str | None = None,
    ) -> None:
        self.max_message_size = max_message_size
        self.encoding = None if encoding in (None, "identity") else encoding
        self._buffer = bytearray()
        self._error: WireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        messages: list[bytes] = []
        try:
            while len(self._buffer) >= PREFIX_LENGTH:
                flag = self._buffer[0]
                length = int.from_bytes(self._buffer[1:PREFIX_LENGTH], "big")
                if flag > 1:
                    raise WireError(f"invalid compressed flag {flag} in message prefix")
                if flag == 1 and self.encoding is None:
                    raise WireError("compressed message without grpc-encoding")
                if self.max_message_size is not None and length > self.max_message_size:
                    raise MessageTooLarge(length, self.max_message_size)
                end = PREFIX_LENGTH + length
                if len(self._buffer) < end:
                    break
                body = bytes(self._buffer[PREFIX_LENGTH:end])
                del self._buffer[:end]
                if flag == 1:
                    assert self.encoding is not None
                    body = _decompress(self.encoding, body, self.max_message_size)
                messages.append(body)
        except WireError as error:
            self._error = error
            self._buffer.clear()
            raise
        return messages

    def end(self) -> None:
        if self._error is not None:
            raise self._error
        if self._buffer:
            expected = None
            if len(self._buffer) >= PREFIX_LENGTH:
                expected = int.from_bytes(self._buffer[1:PREFIX_LENGTH], "big")
            self._error = TruncatedMessage(len(self._buffer), expected)
            self._buffer.clear()
            raise self._error


# ---------------------------------------------------------------------------
# grpc-timeout

_TIMEOUT_UNITS: tuple[tuple[bytes, int], ...] = (
    (b"n", 1),
    (b"u", 1_000),
    (b"m", 1_000_000),
    (b"S", 1_000_000_000),
    (b"M", 60 * 1_000_000_000),
    (b"H", 3600 * 1_000_000_000),
)
_NANOS_PER_UNIT = {unit[0]: nanos for unit, nanos in _TIMEOUT_UNITS}
_MAX_TIMEOUT_VALUE = 10**MAX_TIMEOUT_DIGITS - 1
_TIMEOUT_RE = re.compile(rb"([0-9]{1,8})([HMSmun])")


def encode_timeout(seconds: float) -> bytes:
    """``seconds`` as a ``grpc-timeout`` value: at most 8 digits, rounded up.

    Negative values encode as ``0n`` (already expired); values beyond
    99999999 hours are capped there.
    """
    if math.isnan(seconds):
        raise ValueError("timeout is NaN")
    if seconds <= 0:
        return b"0n"
    if math.isinf(seconds):
        return b"%dH" % _MAX_TIMEOUT_VALUE
    nanos = math.ceil(seconds * 1e9)
    for unit, per in _TIMEOUT_UNITS:
        value = -(-nanos // per)
        if value <= _MAX_TIMEOUT_VALUE:
            return b"%d%s" % (value, unit)
    return b"%dH" % _MAX_TIMEOUT_VALUE


def decode_timeout(value: bytes | str) -> float:
    """A ``grpc-timeout`` value in seconds; ``WireError`` INTERNAL if malformed."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    match = _TIMEOUT_RE.fullmatch(raw)
    if match is None:
        raise WireError(f"malformed grpc-timeout {raw!r}")
    return int(match[1]) * _NANOS_PER_UNIT[match[2][0]] / 1e9


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


# ---------------------------------------------------------------------------
# Metadata

_KEY_RE = re.compile(r"[0-9a-z_.\-]+")
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_CONNECTION_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_NOT_METADATA = frozenset({"content-type", "te", "host"})


def _is_reserved(key: str) -> bool:
    return key.startswith((":", "grpc-")) or key in _NOT_METADATA


def _b64decode(value: bytes) -> bytes:
    stripped = value.strip().rstrip(b"=")
    try:
        return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"invalid base64 in binary metadata value {value[:40]!r}") from None


def encode_metadata(metadata: MetadataInput) -> Headers:
    """User metadata as header pairs; ``ValueError`` for what gRPC forbids.

    Keys are lower-cased gRPC keys (``[0-9a-z_.-]``), not reserved
    (``grpc-*``, pseudo-headers, ``content-type``, ``te``). ``-bin`` values
    (``bytes``, or ``str`` taken as UTF-8) become unpadded base64; other values
    must be printable ASCII ``str`` (or such ``bytes``).
    """
    headers: Headers = []
    for key, value in metadata:
        name = key.lower()
        if not _KEY_RE.fullmatch(name):
            raise ValueError(f"invalid metadata key {key!r}")
        if _is_reserved(name):
            raise ValueError(f"metadata key {key!r} is reserved")
        if name.endswith("-bin"):
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            headers.append((name.encode(), base64.b64encode(raw).rstrip(b"=")))
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not _PRINTABLE_RE.fullmatch(text):
            raise ValueError(
                f"metadata value for {key!r} must be printable ASCII; use a -bin key for bytes"
            )
        headers.append((name.encode(), text.encode("ascii")))
    return headers


def decode_metadata(headers: Iterable[Header]) -> Metadata:
    """User metadata from received headers or trailers; ``WireError`` if invalid.

    Pseudo-headers, ``grpc-*``, ``content-type`` and ``te`` are left out;
    ``-bin`` values are base64-decoded (padded or not) to ``bytes``; other
    values must be printable ASCII. Names that are not gRPC keys are skipped.
    """
    pairs: list[tuple[str, str | bytes]] = []
    for raw_name, raw_value in headers:
        try:
            name = raw_name.decode("ascii")
        except UnicodeDecodeError:
            continue
        if _is_reserved(name) or not _KEY_RE.fullmatch(name):
            continue
        if name.endswith("-bin"):
            pairs.append((name, _b64decode(raw_value)))
            continue
        text = raw_value.decode("latin-1").strip(" \t")
        if not _PRINTABLE_RE.fullmatch(text):
            raise WireError(f"metadata value for {name!r} is not printable ASCII")
        pairs.append((name, text))
    return tuple(pairs)


# ---------------------------------------------------------------------------
# Requests


def is_grpc_content_type(value: bytes) -> bool:
    """``application/grpc``, ``application/grpc+proto``, ``application/grpc;...``."""
    lowered = value.lower()
    return lowered == CONTENT_TYPE or lowered.startswith((CONTENT_TYPE + b"+", CONTENT_TYPE + b";"))


def build_request_headers(
    path: str,
    *,
    authority: str,
    timeout: float | None = None,
    metadata: MetadataInput = (),
    scheme: str = "https",
    content_type: bytes = CONTENT_TYPE,
    user_agent: str | None = None,
    encoding: str | None = None,
) -> Headers:
    """Request headers: pseudo-headers, content-type, te, grpc-timeout, metadata."""
    headers: Headers = [
        (b":method", b"POST"),
        (b":scheme", scheme.encode("ascii")),
        (b":path", path.encode("ascii")),
        (b":authority", authority.encode("ascii")),
        (b"content-type", content_type),
        (b"te", b"trailers"),
    ]
    if timeout is not None:
        headers.append((b"grpc-timeout", encode_timeout(timeout)))
    if encoding is not None:
        headers.append((b"grpc-encoding", encoding.encode("ascii")))
    if user_agent is not None:
        headers.append((b"user-agent", user_agent.encode("ascii")))
    headers.extend(encode_metadata(metadata))
    return headers


@dataclass(frozen=True)
class RequestHead:
    """A validated gRPC request's headers."""

    path: str
    """``/package.Service/Method``."""
    authority: str
    content_type: str
    timeout: float | None
    """Seconds from ``grpc-timeout``, None without one."""
    metadata: Metadata
    encoding: str | None = None
    """``grpc-encoding`` (None for identity)."""
    scheme: str = "https"

    @property
    def service(self) -> str:
        return self.path[1:].partition("/")[0]

    @property
    def method(self) -> str:
        return self.path[1:].partition("/")[2]


_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


def _malformed(message: str) -> WireError:
    return WireError(
        f"malformed request: {message}",
        status=grpc.StatusCode.INTERNAL,
        h3_error=H3Error.MESSAGE_ERROR,
    )


def _check_field(name: bytes, value: bytes) -> None:
    if not _TOKEN_RE.fullmatch(name):
        raise _malformed(f"invalid header name {name[:40]!r}")
    if name in _CONNECTION_HEADERS:
        raise _malformed(f"connection-specific header {name.decode()!r}")
    if b"\x00" in value or b"\r" in value or b"\n" in value:
        raise _malformed(f"invalid character in the value of {name.decode()!r}")


def parse_request_headers(headers: Sequence[Header]) -> RequestHead:
    """Validate a request's HEADERS; raise ``WireError`` for anything refused.

    Order of checks: malformed HTTP/3 (``h3_error`` H3_MESSAGE_ERROR: bad or
    duplicate pseudo-headers, pseudo after regular, upper case or invalid
    names, connection headers, ``te`` other than ``trailers``, NUL/CR/LF);
    ``:method`` not POST -> 405; content-type not ``application/grpc*`` -> 415;
    ``:path`` not ``/Service/Method`` -> UNIMPLEMENTED; malformed
    ``grpc-timeout`` or metadata -> INTERNAL.
    """
    pseudo: dict[bytes, bytes] = {}
    regular: list[Header] = []
    for name, value in headers:
        if name.startswith(b":"):
            if regular:
                raise _malformed("pseudo-header after a regular header")
            if name not in _REQUEST_PSEUDO:
                raise _malformed(f"unknown pseudo-header {name[:40]!r}")
            if name in pseudo:
                raise _malformed(f"duplicate {name.decode()}")
            if b"\x00" in value or b"\r" in value or b"\n" in value:
                raise _malformed(f"invalid character in {name.decode()}")
            pseudo[name] = value
            continue
        _check_field(name, value)
        if name == b"te" and value != b"trailers":
            raise _malformed(f"te: {value[:40]!r} (only 'trailers' is allowed)")
        regular.append((name, value))
    for required in (b":method", b":scheme", b":path"):
        if not pseudo.get(required):
            raise _malformed(f"missing {required.decode()}")

    method = pseudo[b":method"]
    if method != b"POST":
        raise WireError(
            f"gRPC requires POST, got {method.decode('latin-1')!r}",
            status=grpc.StatusCode.INTERNAL,
            http_status=405,
        )
    fields: dict[bytes, bytes] = {}
    for name, value in regular:
        fields.setdefault(name, value)
    content_type = fields.get(b"content-type", b"")
    if not is_grpc_content_type(content_type):
        shown = content_type.decode("latin-1") or "none"
        raise WireError(
            f"invalid gRPC request content-type {shown!r}",
            status=grpc.StatusCode.INTERNAL,
            http_status=415,
        )
    path = pseudo[b":path"].decode("latin-1")
    service, slash, rpc = path[1:].partition("/")
    if not path.startswith("/") or not service or not slash or not rpc or "/" in rpc:
        raise WireError(f"malformed method name {path!r}", status=grpc.StatusCode.UNIMPLEMENTED)
    timeout_raw = fields.get(b"grpc-timeout")
    timeout = decode_timeout(timeout_raw) if timeout_raw is not None else None
    encoding_raw = fields.get(b"grpc-encoding")
    encoding = encoding_raw.decode("latin-1") if encoding_raw is not None else None
    if encoding == "identity":
        encoding = None
    return RequestHead(
        path=path,
        authority=pseudo.get(b":authority", b"").decode("latin-1"),
        content_type=content_type.decode("latin-1"),
        timeout=timeout,
        metadata=decode_metadata(regular),
        encoding=encoding,
        scheme=pseudo[b":scheme"].decode("latin-1"),
    )


# ---------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class Status:
    """A call's final status as trailers carry it."""

    code: grpc.StatusCode
    message: str = ""
    metadata: Metadata = field(default=())


@dataclass(frozen=True)
class ResponseHead:
    """Validated response headers. ``status`` is set for a trailers-only
    response (headers with ``grpc-status``, or a non-gRPC/non-200 answer
    mapped to a status); the call is then over."""

    http_status: int
    metadata: Metadata
    content_type: str = ""
    status: Status | None = None


def build_response_headers(
    metadata: MetadataInput = (), *, content_type: bytes = CONTENT_TYPE
) -> Headers:
    """``:status 200``, content-type and user metadata."""
    return [(b":status", b"200"), (b"content-type", content_type), *encode_metadata(metadata)]


def build_trailers(
    code: grpc.StatusCode, message: str = "", metadata: MetadataInput = ()
) -> Headers:
    """Trailers: ``grpc-status``, ``grpc-message`` (if any) and user metadata."""
    trailers: Headers = [(b"grpc-status", b"%d" % code.value[0])]
    if message:
        trailers.append((b"grpc-message", encode_grpc_message(message)))
    trailers.extend(encode_metadata(metadata))
    return trailers


def build_trailers_only(
    code: grpc.StatusCode,
    message: str = "",
    metadata: MetadataInput = (),
    *,
    http_status: int = 200,
    content_type: bytes = CONTENT_TYPE,
) -> Headers:
    """One HEADERS frame (sent with FIN) that is the whole response."""
    return [
        (b":status", b"%d" % http_status),
        (b"content-type", content_type),
        *build_trailers(code, message, metadata),
    ]


def _fields(headers: Iterable[Header]) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        fields.setdefault(name, value)
    return fields


def _status_from_fields(fields: dict[bytes, bytes], headers: Iterable[Header]) -> Status:
    raw = fields[b"grpc-status"]
    if not raw.isdigit():
        return Status(grpc.StatusCode.INTERNAL, f"malformed grpc-status {raw[:20]!r}")
    message = decode_grpc_message(fields.get(b"grpc-message", b""))
    return Status(status_from_int(int(raw)), message, decode_metadata(headers))


def parse_response_headers(headers: Sequence[Header]) -> ResponseHead:
    """Read a response's first HEADERS frame (client side).

    With ``grpc-status`` present this is trailers-only: ``status`` is that
    status. A non-200 ``:status`` without one maps through
    ``status_from_http``; a 200 with a non-gRPC content type is UNKNOWN.
    ``WireError`` only for a missing or non-numeric ``:status``.
    """
    fields = _fields(headers)
    raw_status = fields.get(b":status", b"")
    if not raw_status.isdigit():
        raise WireError(f"response without a valid :status ({raw_status[:20]!r})")
    http_status = int(raw_status)
    content_type = fields.get(b"content-type", b"").decode("latin-1")
    metadata = decode_metadata(headers)
    status: Status | None = None
    if b"grpc-status" in fields:
        status = _status_from_fields(fields, headers)
    elif http_status != 200:
        status = Status(
            status_from_http(http_status),
            f"unexpected HTTP status {http_status} without grpc-status",
            metadata,
        )
    elif not is_grpc_content_type(content_type.encode("latin-1")):
        status = Status(
            grpc.StatusCode.UNKNOWN,
            f"response has non-gRPC content-type {content_type or 'none'!r}",
            metadata,
        )
    return ResponseHead(http_status, metadata, content_type, status)


def parse_trailers(headers: Sequence[Header]) -> Status:
    """The final status from trailers; missing ``grpc-status`` is INTERNAL."""
    fields = _fields(headers)
    if b"grpc-status" not in fields:
        return Status(
            grpc.StatusCode.INTERNAL, "trailers without grpc-status", decode_metadata(headers)
        )
    return _status_from_fields(fields, headers)

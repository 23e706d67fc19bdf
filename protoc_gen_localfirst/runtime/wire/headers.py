"""Request and response headers of a gRPC call over HTTP/3.

Requests: ``build_request_headers`` (client) and ``parse_request_headers``
(server; raises ``WireError``, with ``h3_error`` set for a malformed HTTP/3
request). Responses: ``build_response_headers``, ``build_trailers``,
``build_trailers_only`` (server) and ``parse_response_headers`` (``.status``
set if trailers-only), ``parse_trailers`` (client).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import grpc

from protoc_gen_localfirst.runtime.wire.metadata import (
    Header,
    Headers,
    Metadata,
    MetadataInput,
    decode_metadata,
    encode_metadata,
)
from protoc_gen_localfirst.runtime.wire.status import (
    H3Error,
    WireError,
    decode_grpc_message,
    encode_grpc_message,
    status_from_http,
    status_from_int,
)
from protoc_gen_localfirst.runtime.wire.timeout import decode_timeout, encode_timeout

CONTENT_TYPE = b"application/grpc"

_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_CONNECTION_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


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
    pseudo, regular = _split_request_fields(headers)
    fields = _fields(regular)
    path, content_type = _check_grpc_request(pseudo, fields)
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


_VALID_FIELDS: set[Header] = set()
"""Regular request fields already checked (bounded): most repeat from call to call."""


def _split_request_fields(headers: Sequence[Header]) -> tuple[dict[bytes, bytes], list[Header]]:
    """Pseudo-headers and regular fields of a well-formed HTTP/3 request (RFC 9114 4.3)."""
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
        if (name, value) not in _VALID_FIELDS:
            _check_field(name, value)
            if name == b"te" and value != b"trailers":
                raise _malformed(f"te: {value[:40]!r} (only 'trailers' is allowed)")
            if len(value) <= 256:
                if len(_VALID_FIELDS) >= 4096:
                    _VALID_FIELDS.clear()
                _VALID_FIELDS.add((name, value))
        regular.append((name, value))
    for required in (b":method", b":scheme", b":path"):
        if not pseudo.get(required):
            raise _malformed(f"missing {required.decode()}")
    return pseudo, regular


def _check_grpc_request(
    pseudo: dict[bytes, bytes], fields: dict[bytes, bytes]
) -> tuple[str, bytes]:
    """The ``:path`` and content-type of a gRPC request; 405, 415 or UNIMPLEMENTED."""
    method = pseudo[b":method"]
    if method != b"POST":
        raise WireError(
            f"gRPC requires POST, got {method.decode('latin-1')!r}",
            status=grpc.StatusCode.INTERNAL,
            http_status=405,
        )
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
    return path, content_type


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

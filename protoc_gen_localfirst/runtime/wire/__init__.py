"""Sans-IO gRPC over HTTP/3: message framing, headers, status and timeouts.

No sockets, no asyncio, no QUIC library: codecs and validators that take
header lists and bytes and return values or raise ``WireError``, in the
style of h11 and aioquic's ``h3/connection.py``. Both HTTP/3 sides use this
package; the names re-exported here are a stable API (changes are additive
only). One job per module:

* ``framing``: length-prefixed messages (``encode_message``, ``MessageDecoder``)
* ``headers``: request and response headers, trailers (build and parse)
* ``metadata``: user metadata as header pairs (``-bin`` base64)
* ``timeout``: ``grpc-timeout`` values
* ``status``: status codes, ``grpc-message``, ``WireError``, HTTP/3 error codes

API summary
-----------
Framing (PROTOCOL-HTTP2 "Length-Prefixed-Message")::

    encode_message(data: bytes, *, compressed: bool = False) -> bytes
    MessageDecoder(max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                   encoding: str | None = None, *, side: str | None = None)
        .feed(data: bytes) -> list[bytes]   # complete messages, in order
        .end() -> None                      # at end of stream: raises on a partial message
        .buffered -> int                    # bytes held for an incomplete message
    check_send_size(length: int, limit: int | None, *, side=None) -> None
                                            # raises MessageTooLarge (sent=True)

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
``TruncatedMessage`` (INTERNAL) are subclasses for the framing cases; size
errors read as grpc's (``SERVER: Received message larger than max (N vs. M)``,
``CLIENT: Sent ...``; ``side`` gives the prefix).
"""

from protoc_gen_localfirst.runtime.wire.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageDecoder,
    MessageTooLarge,
    TruncatedMessage,
    check_send_size,
    encode_message,
)
from protoc_gen_localfirst.runtime.wire.headers import (
    CONTENT_TYPE,
    RequestHead,
    ResponseHead,
    Status,
    build_request_headers,
    build_response_headers,
    build_trailers,
    build_trailers_only,
    is_grpc_content_type,
    parse_request_headers,
    parse_response_headers,
    parse_trailers,
)
from protoc_gen_localfirst.runtime.wire.metadata import (
    Header,
    Headers,
    Metadata,
    MetadataInput,
    decode_metadata,
    encode_metadata,
)
from protoc_gen_localfirst.runtime.wire.status import (
    DEADLINE_EXCEEDED,
    METHOD_NOT_FOUND,
    SHUTTING_DOWN,
    H3Error,
    WireError,
    decode_grpc_message,
    encode_grpc_message,
    status_from_h3_error,
    status_from_http,
    status_from_int,
)
from protoc_gen_localfirst.runtime.wire.timeout import decode_timeout, encode_timeout

__all__ = [
    "CONTENT_TYPE",
    "DEADLINE_EXCEEDED",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "METHOD_NOT_FOUND",
    "SHUTTING_DOWN",
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
    "check_send_size",
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

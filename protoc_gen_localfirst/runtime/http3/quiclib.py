"""The server's QUIC library, loaded by name: qh3 (default) or aioquic, same API.

``load_quic_library`` imports only the library asked for and gathers the
classes and helpers the server uses (``QuicLib``); ``stream_errors_h3`` makes
its ``H3Connection`` reset one stream for malformed request headers instead
of closing the connection (and lets the server drop a finished stream's state); ``send_backlog`` is a stream's untransmitted bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from protoc_gen_localfirst.runtime.http3.options import QUIC_LIBRARIES

__all__ = ["QuicLib", "load_quic_library", "send_backlog", "stream_errors_h3"]


@dataclass(frozen=True)
class QuicLib:
    """What the server uses of one QUIC library."""

    name: str
    serve: Callable[..., Awaitable[Any]]
    QuicConfiguration: Any
    QuicConnectionProtocol: Any
    H3Connection: Any
    H3_ALPN: list[str]
    HeadersReceived: Any
    DataReceived: Any
    StreamDataReceived: Any
    StreamReset: Any
    StopSendingReceived: Any
    ConnectionTerminated: Any
    ProtocolNegotiated: Any
    MessageError: Any
    ProtocolError: Any
    encode_frame: Callable[[int, bytes], bytes]
    encode_uint_var: Callable[[int], bytes]
    GOAWAY: int
    load_pair: Callable[[Any, bytes, bytes], None]
    """Put a PEM certificate chain and key (bytes) into a ``QuicConfiguration``."""


def load_quic_library(name: str) -> QuicLib:
    if name not in QUIC_LIBRARIES:
        raise ValueError(f"quic_library must be one of {', '.join(QUIC_LIBRARIES)}, got {name!r}")
    asyncio_mod = importlib.import_module(f"{name}.asyncio")
    h3 = importlib.import_module(f"{name}.h3.connection")
    h3_events = importlib.import_module(f"{name}.h3.events")
    quic_events = importlib.import_module(f"{name}.quic.events")
    config = importlib.import_module(f"{name}.quic.configuration")
    if name == "qh3":
        encode_uint_var = h3.encode_uint_var
    else:
        encode_uint_var = importlib.import_module("aioquic.buffer").encode_uint_var
    return QuicLib(
        name=name,
        serve=asyncio_mod.serve,
        QuicConfiguration=config.QuicConfiguration,
        QuicConnectionProtocol=asyncio_mod.QuicConnectionProtocol,
        H3Connection=h3.H3Connection,
        H3_ALPN=list(h3.H3_ALPN),
        HeadersReceived=h3_events.HeadersReceived,
        DataReceived=h3_events.DataReceived,
        StreamDataReceived=quic_events.StreamDataReceived,
        StreamReset=quic_events.StreamReset,
        StopSendingReceived=quic_events.StopSendingReceived,
        ConnectionTerminated=quic_events.ConnectionTerminated,
        ProtocolNegotiated=quic_events.ProtocolNegotiated,
        MessageError=h3.MessageError,
        ProtocolError=h3.ProtocolError,
        encode_frame=h3.encode_frame,
        encode_uint_var=encode_uint_var,
        GOAWAY=int(h3.FrameType.GOAWAY),
        load_pair=_load_pair_qh3 if name == "qh3" else _load_pair_aioquic,
    )


def _load_pair_qh3(configuration: Any, chain: bytes, key: bytes) -> None:
    configuration.load_cert_chain(chain, key)  # qh3 takes PEM bytes as well as paths


def _load_pair_aioquic(configuration: Any, chain: bytes, key: bytes) -> None:
    # aioquic reads only paths; it keeps cryptography objects, so parse them here.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509 import load_pem_x509_certificates

    certificates = load_pem_x509_certificates(chain)
    configuration.certificate = certificates[0]
    configuration.certificate_chain = certificates[1:]
    configuration.private_key = load_pem_private_key(key, password=None)


def stream_errors_h3(lib: QuicLib) -> Any:
    """``lib.H3Connection`` whose malformed request headers reset one stream.

    qh3 and aioquic turn a ``MessageError`` (bad header names, pseudo-headers
    out of order, ...) on any request stream into a connection close. RFC
    9114 (4.1.2) makes a malformed request a *stream* error, so catch it for
    client-initiated bidirectional streams and hand it to ``on_stream_error``.
    """

    class _StreamErrorsH3(lib.H3Connection):  # type: ignore[misc, name-defined]
        on_stream_error: Callable[[int, str], None] = staticmethod(lambda sid, why: None)

        def forget_stream(self, stream_id: int) -> None:
            """Drop the per-stream state of a request the server is done with.

            The libraries keep it until both directions ended; when the
            server answered before the request ended (a message over the
            limit, an early status) it drops the rest of the request before
            the library sees it, so the library would keep it for good.
            A stream blocked on QPACK stays (the decoder still refers to it).
            """
            stream = self._stream.get(stream_id)
            if stream is not None and not stream.blocked:
                del self._stream[stream_id]

        def handle_event(self, event: Any) -> list[Any]:
            done = bool(getattr(self, "_is_done", False))
            if not done and isinstance(event, lib.StreamDataReceived) and event.stream_id % 4 == 0:
                try:
                    return list(self._receive_stream_data(event))
                except lib.MessageError as error:
                    self._stream.pop(event.stream_id, None)
                    self.on_stream_error(event.stream_id, str(error))
                    return []
                except lib.ProtocolError as error:
                    self._is_done = True
                    self._quic.close(error_code=error.error_code, reason_phrase=error.reason_phrase)
                    return []
            return list(super().handle_event(event))

    return _StreamErrorsH3


def send_backlog(quic: Any, stream_id: int) -> int:
    """Bytes queued on ``stream_id`` and not yet transmitted."""
    size = getattr(quic, "get_send_buffer_size", None)
    if size is not None:  # qh3
        return int(size(stream_id))
    stream = quic._streams.get(stream_id)  # aioquic
    if stream is None:
        return 0
    sender = stream.sender
    return max(0, int(sender._buffer_stop) - int(sender.next_offset))

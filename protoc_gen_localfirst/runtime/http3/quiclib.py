"""The server's QUIC library, loaded by name: qh3 (default) or aioquic, same API.

``load_quic_library`` imports only the library asked for and gathers the
classes and helpers the server uses (``QuicLib``); ``stream_errors_h3`` makes
its ``H3Connection`` reset one stream for malformed request headers instead
of closing the connection (and lets the server drop a finished stream's state); ``send_backlog`` is a stream's untransmitted bytes;
``limit_peer_streams`` sets how many request streams a client may have open at once;
``serve_batched`` is qh3's ``serve`` on its batching UDP transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from protoc_gen_localfirst.runtime.http3.options import QUIC_LIBRARIES

_LOG = logging.getLogger("protoc_gen_localfirst.h3_server")

__all__ = [
    "QuicLib",
    "StaticTableEncoder",
    "limit_peer_streams",
    "load_quic_library",
    "send_backlog",
    "serve_batched",
    "skip_unlogged_packet_parsing",
    "stream_errors_h3",
]


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


class StaticTableEncoder:
    """qh3's QPACK encoder, kept from using the dynamic table.

    qh3 2.1's encoder (Rust) slows down on a long-lived connection whose
    header values keep changing (``grpc-timeout`` counts down, load reports
    differ per answer): measured on one client connection, ``encode`` went
    from 3 us to 750 us per header block after ~100k calls at concurrency 64,
    and calls/s fell from ~7000 to ~1000 (the HTTP/3 unary results that got
    worse the longer a benchmark ran). With no dynamic table (capacity 0, as
    if the peer allowed none) every block is static-table references and
    literals: ~100 bytes for a request's headers instead of ~10, 1.8 us per
    encode, no encoder-stream instructions and no acknowledgements to track.
    Decoding what the peer sends is unchanged.
    """

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.encode = encoder.encode
        self.feed_decoder = encoder.feed_decoder

    def apply_settings(
        self, max_table_capacity: int = 0, dyn_table_capacity: int = 0, blocked_streams: int = 0
    ) -> bytes:
        return bytes(
            self._encoder.apply_settings(
                max_table_capacity=0, dyn_table_capacity=0, blocked_streams=0
            )
        )


def _not_logged(event: str, data: bytes) -> None:
    return None


def skip_unlogged_packet_parsing(quic: Any) -> None:
    """Make qh3 stop parsing every packet it sends for a log nobody keeps.

    qh3 2.1's ``datagrams_to_send`` passes each datagram to ``_log_packets``,
    which parses the header of every packet in it and copies the packet out,
    then hands it to ``_log_packet``, which returns at once without a QUIC
    logger. That is about 5% of a sender's CPU on a bulk transfer. With no
    logger configured (``QuicConfiguration.quic_logger``, checked here), the
    connection gets a no-op instead; with one, nothing changes. aioquic has
    no such method: nothing is done.
    """
    if getattr(quic, "_quic_logger", 0) is None and hasattr(quic, "_log_packets"):
        quic._log_packets = _not_logged


def stream_errors_h3(lib: QuicLib) -> Any:
    """``lib.H3Connection`` whose malformed request headers reset one stream.

    qh3 and aioquic turn a ``MessageError`` (bad header names, pseudo-headers
    out of order, ...) on any request stream into a connection close. RFC
    9114 (4.1.2) makes a malformed request a *stream* error, so catch it for
    client-initiated bidirectional streams and hand it to ``on_stream_error``.
    """

    static_table_only = lib.name == "qh3"

    class _StreamErrorsH3(lib.H3Connection):  # type: ignore[misc, name-defined]
        on_stream_error: Callable[[int, str], None] = staticmethod(lambda sid, why: None)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if static_table_only:  # see StaticTableEncoder
                self._encoder = StaticTableEncoder(self._encoder)  # type: ignore[has-type]

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


_QH3_LOCAL_MAX_STREAMS_BIDI = 21
"""Position of ``local_max_streams_bidi`` in qh3's ``QuicConnectionCore(...)`` (qh3 2.x)."""
_QH3_CORE_ARGUMENTS = 28
"""How many positional arguments qh3 2.x passes to ``QuicConnectionCore(...)``."""


@contextlib.contextmanager
def _replaced(module: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def limit_peer_streams(quic: Any, limit: int) -> None:
    """Let the peer of ``quic`` (a server connection, before its handshake) have
    at most ``limit`` bidirectional streams open at once.

    This is the ``initial_max_streams_bidi`` transport parameter; both
    libraries then grant one more stream (MAX_STREAMS) per stream closed, so
    it is a limit on concurrent request streams. Neither library configures
    it. aioquic keeps it in ``_local_max_streams_bidi`` (default 128). qh3
    writes a literal 100 twice, into the transport parameters it sends and
    into its Rust core (which enforces it), both created when the first
    Initial packet arrives; for this one connection those two constructors
    are called with ``limit`` instead. The swaps are synchronous, on the
    event loop's thread, so no other connection sees them.
    """
    aioquic_limit = getattr(quic, "_local_max_streams_bidi", None)
    if aioquic_limit is not None:
        aioquic_limit.value = aioquic_limit.sent = limit
        return
    connection_module: Any = sys.modules[type(quic).__module__]
    bridge_module: Any = importlib.import_module("qh3.quic.tls_bridge")
    core_class = connection_module.QuicConnectionCore
    parameters_class = bridge_module.QuicTransportParameters
    create_core, create_tls = quic._create_core, quic._create_tls

    def limited_core(*args: Any) -> Any:
        values = list(args)
        if len(values) != _QH3_CORE_ARGUMENTS:  # another qh3: leave its default
            _LOG.warning("qh3's QuicConnectionCore changed: max_concurrent_streams not applied")
            return core_class(*values)
        values[_QH3_LOCAL_MAX_STREAMS_BIDI] = limit
        return core_class(*values)

    def limited_parameters(*args: Any, **kwargs: Any) -> Any:
        parameters = parameters_class(*args, **kwargs)
        parameters.initial_max_streams_bidi = limit
        return parameters

    def create_limited_core(*args: Any, **kwargs: Any) -> None:
        with _replaced(connection_module, "QuicConnectionCore", limited_core):
            create_core(*args, **kwargs)

    def create_limited_tls(*args: Any, **kwargs: Any) -> Any:
        # The bridge serializes its parameters when created, and again on a version change.
        with _replaced(bridge_module, "QuicTransportParameters", limited_parameters):
            bridge = create_tls(*args, **kwargs)
        serialize = bridge.serialize_transport_parameters

        def serialize_limited() -> bytes:
            with _replaced(bridge_module, "QuicTransportParameters", limited_parameters):
                return bytes(serialize())

        bridge.serialize_transport_parameters = serialize_limited
        return bridge

    quic._create_core = create_limited_core
    quic._create_tls = create_limited_tls


async def serve_batched(
    host: str, port: int, *, configuration: Any, create_protocol: Callable[..., Any]
) -> Any:
    """qh3's ``serve``, on qh3's own batching UDP transport (qh3 only).

    ``qh3.asyncio.serve`` listens on a plain asyncio datagram endpoint: one
    ``recvfrom`` per event-loop turn, and each datagram is a full pass
    through the connection (events, then a transmit that sends its own
    ACK). Uploads were bound by that. The client already uses qh3's
    ``OptimizedDatagramTransport`` (recvmmsg/GRO, GSO sends); here the
    listener uses it too, and a burst of short-header datagrams for one
    connection is handed over as one batch (``datagrams_received``: one
    pass, one transmit). Long-header packets (handshakes, new connections,
    version negotiation) go through qh3's own per-datagram path unchanged.
    """
    from qh3._hazmat import pull_quic_header
    from qh3.asyncio._transport import create_optimized_datagram_transport
    from qh3.asyncio.server import QuicServer

    class _BatchingServer(QuicServer):
        def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
            protocols = self._protocols
            cid_length = self._configuration.connection_id_length
            batch: list[bytes] = []
            target: Any = None
            for data in datagrams:
                # A short header (first bit 0) is followed by the destination
                # connection id: no header parse per datagram of a burst.
                if data and not data[0] & 0x80:
                    protocol = protocols.get(data[1 : 1 + cid_length])
                else:
                    try:
                        pull_quic_header(data, 0, cid_length)
                    except ValueError:
                        continue
                    protocol = None
                if protocol is not target or protocol is None:
                    if batch:
                        target.datagrams_received(batch, addr)
                        batch = []
                    target = protocol
                if protocol is None:
                    self.datagram_received(data, addr)
                else:
                    batch.append(data)
            if batch:
                target.datagrams_received(batch, addr)

    _, server = await create_optimized_datagram_transport(
        asyncio.get_running_loop(),
        lambda: _BatchingServer(configuration=configuration, create_protocol=create_protocol),
        sock=await _bound_udp_socket(host, port),
    )
    return server


async def _bound_udp_socket(host: str, port: int) -> socket.socket:
    """A UDP socket bound to ``host``:``port`` (resolved as a passive address)."""
    family, kind, proto, _, address = (
        await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock

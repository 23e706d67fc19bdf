"""gRPC over HTTP/3: a QUIC listener that serves grpc handlers (gRFC G2).

``start_server`` (in ``server.bootstrap``) starts one of these next to the
grpc.aio HTTP/2 server when ``http3=True``: UDP, same port number, TLS, ALPN
``h3``. The protocol work (framing, headers, status, timeouts) is ``wire``;
the I/O around it runs on qh3 (default) or aioquic (same API; picked with
``quic_library``, so benchmarks compare both on this code). This module is
the listener (``H3Server``) and its QUIC protocol; the rest, one job each:
``server_connection`` (one connection's HTTP/3 events), ``server_call`` (one
call), ``dispatch`` (finding handlers), ``context`` (the servicer context),
``quiclib`` (loading the QUIC library).

Handlers
--------
Calls are dispatched exactly as grpc.aio dispatches them: the server's
interceptors (``NodeAnnouncer`` first, so node announcement, UNIMPLEMENTED
for unknown methods and UNAVAILABLE while stopping behave the same on both
transports) wrap a lookup in the same ``grpc.GenericRpcHandler``s the
HTTP/2 server got (from the method table, plus health). The resulting
``grpc.RpcMethodHandler`` is driven here with an ``H3ServicerContext``
(``context``), a re-implementation of grpc.aio's context over one
request stream. Unary requests are read to the end of the request stream
before the handler runs (exactly one message, else INTERNAL); streaming
requests are an async iterator (or ``context.read()``).

A unary response's headers, message and trailers are queued together and
leave in one transmit (see ``server.announce`` for why that matters); the
final responses of all calls that end in one pass of the event loop share
that transmit (``H3ConnectionHandler.transmit_soon``: fewer datagrams and
system calls per call than a transmit each).

Per stream
----------
``H3ServerCall`` holds a stream's state: message decoder, queued request
messages, handler task, deadline timer. It is in ``H3ConnectionHandler.calls``
from the request HEADERS until the final status is queued (or the stream was
reset, or the connection began closing), then removed; ``calls`` is what the
tests watch for leaks.

* ``grpc-timeout``: the handler task is cancelled at the deadline, the client
  gets DEADLINE_EXCEEDED (trailers), and STOP_SENDING(H3_REQUEST_CANCELLED)
  if it was still sending.
* Client RESET_STREAM or STOP_SENDING: the handler task is cancelled (the
  context reports ``cancelled()``), our side is reset with
  H3_REQUEST_CANCELLED, nothing else is sent.
* Malformed request headers (``wire.parse_request_headers`` with
  ``h3_error``, or qh3/aioquic's own header validation): only that stream is
  reset (H3_MESSAGE_ERROR); the libraries would close the whole connection,
  so ``quiclib.stream_errors_h3`` catches their ``MessageError`` per request stream.
  Frame-level garbage (bad frame lengths, DATA before HEADERS) stays a
  connection error, as RFC 9114 requires; other connections are unaffected.
* Not gRPC: 405 for a non-POST, 415 for a non-``application/grpc`` type
  (trailers-only, with grpc-status INTERNAL), then STOP_SENDING(H3_NO_ERROR).
* Bad framing in DATA (compressed flag without grpc-encoding, truncated
  message at end of stream) -> INTERNAL; a length prefix over
  ``max_message_size`` -> RESOURCE_EXHAUSTED (``SERVER: Received message
  larger than max (N vs. M)``, as grpc words it) at once, before the body
  arrives; both end the handler, the status goes out and the rest of the
  request is refused (STOP_SENDING(H3_NO_ERROR)) and dropped. A response
  message over ``max_message_size`` -> RESOURCE_EXHAUSTED (``SERVER: Sent
  message larger than max (N vs. M)``), for unary and streamed responses.
* A call's HTTP/3 stream state is dropped with the call (``forget``), also
  when the request had not ended: late request data is ignored anyway.

Backpressure
------------
Sending: after queueing a message, ``send_message`` waits while the stream's
not-yet-transmitted bytes exceed ``SEND_HIGH_WATER`` (qh3:
``get_send_buffer_size``; aioquic: the stream sender's unsent range), waking
on every receive/transmit of the connection, so a streaming handler cannot
outrun QUIC flow control and congestion control. Receiving: neither library
lets the application withhold flow-control credit (qh3 2.x: its Rust core
sends MAX_STREAM_DATA/MAX_DATA by itself as it hands data over in
``StreamDataReceived`` events; Python sets only the window sizes,
``QuicConfiguration.max_stream_data``/``max_data``, 6 and 15 MiB; pausing the
UDP transport would stop ACKs for every connection of the listener), so
received request messages are queued; more than ``max(4 * max_message_size,
16 MiB)`` queued on one stream fails the call with RESOURCE_EXHAUSTED.

On qh3 the listener is ``quiclib.serve_batched``: qh3's recvmmsg/GSO
transport, a burst of datagrams for one connection processed in one pass
(one transmit), which is what lets uploads reach qh3's own speed.

Limits
------
``max_buffered_bytes``: the request bytes all calls hold unread (queued
messages and partial ones) are one server-wide ``BufferBudget`` (``budget``);
when a call's new bytes push it over, the call holding the most is shed
(RESOURCE_EXHAUSTED, STOP_SENDING), whichever call brought the new bytes.
``max_concurrent_streams``: the QUIC stream limit granted to each client
(``quiclib.limit_peer_streams``). ``max_connections``: a new connection
beyond it is closed with CONNECTION_REFUSED after its first packet.

Drain
-----
``goaway()`` sends an HTTP/3 GOAWAY on every connection (id: the next
request stream the client could open) and from then on resets new requests
with H3_REQUEST_REJECTED (UNAVAILABLE: not processed, safe to retry).
``stop(grace)`` = goaway, wait up to ``grace`` for the calls in flight,
cancel the rest (UNAVAILABLE trailers), close every connection
(H3_NO_ERROR) and the UDP socket.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Callable
from typing import Any

from protoc_gen_localfirst.runtime.http3.budget import BufferBudget
from protoc_gen_localfirst.runtime.http3.dispatch import Dispatcher
from protoc_gen_localfirst.runtime.http3.options import QuicLibrary
from protoc_gen_localfirst.runtime.http3.quiclib import (
    QuicLib,
    limit_peer_streams,
    load_quic_library,
    serve_batched,
    skip_unlogged_packet_parsing,
    stream_errors_h3,
)
from protoc_gen_localfirst.runtime.http3.server_call import H3ServerCall
from protoc_gen_localfirst.runtime.http3.server_connection import H3ConnectionHandler
from protoc_gen_localfirst.runtime.http3.udp import size_buffers
from protoc_gen_localfirst.runtime.tls import CertificatePair
from protoc_gen_localfirst.runtime.wire import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["CLOSE_LINGER", "H3Server", "UdpPortTaken"]

CLOSE_LINGER = 0.05
"""Seconds between the last queued response and closing the connections on stop."""


class UdpPortTaken(OSError):
    """The UDP port for HTTP/3 is in use (the TCP one was free)."""


def _format_peer(addr: Any) -> str:
    if not addr:
        return "unknown"
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"ipv4:{ip.ipv4_mapped}:{port}"
    if ip.version == 6:
        return f"ipv6:[{ip}]:{port}"
    return f"ipv4:{ip}:{port}"


def _protocol_class(lib: QuicLib) -> Any:
    class _Protocol(lib.QuicConnectionProtocol):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, h3_server: H3Server, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            skip_unlogged_packet_parsing(self._quic)
            self.handler = H3ConnectionHandler(h3_server, self)
            self.refused = not h3_server.admit_connection(self.handler)
            if h3_server.max_concurrent_streams is not None:
                limit_peer_streams(self._quic, h3_server.max_concurrent_streams)

        def datagram_received(self, data: Any, addr: Any) -> None:
            if self.handler.peer == "unknown":
                self.handler.peer = _format_peer(addr)
            super().datagram_received(data, addr)
            self._refuse_or_check()

        def datagrams_received(self, data: Any, addr: Any) -> None:
            if self.handler.peer == "unknown":
                self.handler.peer = _format_peer(addr)
            super().datagrams_received(data, addr)
            self._refuse_or_check()

        def _refuse_or_check(self) -> None:
            if self.refused:
                self.handler.refuse_connection()
            else:
                self.handler.check_closing()

        def quic_event_received(self, event: Any) -> None:
            self.handler.quic_event(event)

        def transmit(self) -> None:
            super().transmit()
            self.handler.progress()

    return _Protocol


# ---------------------------------------------------------------------------
# The listener


class H3Server:
    """A QUIC/HTTP/3 listener serving gRPC calls through ``dispatcher``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        certificate: Callable[[], CertificatePair],
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        quic_library: QuicLibrary = "qh3",
        idle_timeout: float = 60.0,
        max_concurrent_streams: int | None = None,
        max_connections: int | None = None,
        max_buffered_bytes: int | None = None,
    ) -> None:
        self.lib = load_quic_library(quic_library)
        self.dispatcher = dispatcher
        self.max_message_size = max_message_size
        self.max_concurrent_streams = max_concurrent_streams
        self.max_connections = max_connections
        self.budget: BufferBudget[H3ServerCall] = BufferBudget(max_buffered_bytes)
        self.refused_connections = 0
        self.h3_class = stream_errors_h3(self.lib)
        self.connections: set[H3ConnectionHandler] = set()
        self.closing = False
        self.port = 0
        self._listener: Any = None
        self._closed = asyncio.Event()
        configuration = self.lib.QuicConfiguration(
            is_client=False,
            alpn_protocols=self.lib.H3_ALPN,
            idle_timeout=idle_timeout,
            # HTTP/3 SETTINGS announce H3_DATAGRAM; strict peers (qh3) then need the
            # transport parameter too (aioquic's http3_server example does the same).
            max_datagram_frame_size=65536,
        )
        self._certificate = certificate
        self._generation = -1
        self._configuration = configuration
        self._refresh_certificate()

    def _refresh_certificate(self) -> None:
        """New connections get the current pair; open ones keep theirs (TLS is done)."""
        pair = self._certificate()
        if pair.generation != self._generation:
            self.lib.load_pair(self._configuration, pair.chain, pair.key)
            self._generation = pair.generation

    @property
    def calls_in_flight(self) -> int:
        """Calls whose state is held, over all connections (tests watch this)."""
        return sum(len(c.calls) for c in self.connections)

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP ``host:port``; ``UdpPortTaken`` if the port is in use."""
        bare = host.strip("[]")
        protocol_class = _protocol_class(self.lib)

        def create_protocol(*args: Any, **kwargs: Any) -> Any:
            # The connection reads the certificate at its first datagram, after this.
            self._refresh_certificate()
            return protocol_class(*args, h3_server=self, **kwargs)

        serve = serve_batched if self.lib.name == "qh3" else self.lib.serve
        try:
            self._listener = await serve(
                bare, port, configuration=self._configuration, create_protocol=create_protocol
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UdpPortTaken(
                    errno.EADDRINUSE,
                    f"UDP port {port} on {host} is in use (TCP {port} was free): "
                    "HTTP/3 listens on the same port number as HTTP/2",
                ) from error
            raise
        transport = self._listener._transport
        size_buffers(transport.get_extra_info("socket"))
        self.port = int(transport.get_extra_info("sockname")[1])

    def admit_connection(self, conn: H3ConnectionHandler) -> bool:
        """A new QUIC connection: count it in, or refuse it at ``max_connections``
        (connections already closing do not count)."""
        if self.max_connections is not None:
            open_connections = sum(1 for c in self.connections if not c.closed)
            if open_connections >= self.max_connections:
                self.refused_connections += 1
                return False
        self.connections.add(conn)
        return True

    def connection_closed(self, conn: H3ConnectionHandler) -> None:
        self.connections.discard(conn)

    def goaway(self) -> None:
        """GOAWAY on every connection; new requests get H3_REQUEST_REJECTED."""
        for conn in list(self.connections):
            conn.goaway()

    async def stop(self, grace: float) -> None:
        """GOAWAY, let calls finish for ``grace`` seconds, cancel the rest, close."""
        self.goaway()
        self.closing = True
        waits = [asyncio.ensure_future(c.wait_idle()) for c in list(self.connections)]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace if grace > 0 else 0.001)
            for task in pending:
                task.cancel()
        for conn in list(self.connections):
            for call in list(conn.calls.values()):
                call.server_cancel()
        tasks = [call.task for conn in list(self.connections) for call in conn.calls.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        # The last responses were just queued: give them a moment on the wire
        # before CONNECTION_CLOSE, which makes a peer drop what is unprocessed.
        await asyncio.sleep(CLOSE_LINGER)
        for conn in list(self.connections):
            conn.close()
        # Let the CONNECTION_CLOSE frames leave before the socket closes.
        await asyncio.sleep(0)
        if self._listener is not None:
            self._listener.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

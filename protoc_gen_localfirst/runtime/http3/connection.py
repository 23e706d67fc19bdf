"""One QUIC connection of the HTTP/3 client: handshake, stream events, send backpressure.

``H3ClientProtocol`` is qh3's ``QuicConnectionProtocol`` with an
``H3Connection`` on top. It does no gRPC: it routes HTTP/3 events of each
request stream to the ``StreamListener`` registered for it, tells every
listener when the connection ends (with a reason a person can read), and lets
senders wait until a stream's send buffer has drained (``wait_writable``).

Why our own ``open_connection`` instead of ``qh3.asyncio.connect``:

* the UDP socket is **connected** to the server. The kernel then reports an
  ICMP "port unreachable" as ``ECONNREFUSED`` (``error_received``): a replica
  that was killed, or a server with nothing on UDP, fails the connection in
  about a round trip instead of after a handshake or idle timeout. That is
  what keeps failover as fast as over TCP, where a dead process answers RST.
* the TLS server name is always the address we dial. qh3, given no server
  name (its ``connect`` passes none for IP addresses), checks the certificate
  against the first name *in the certificate itself*, which verifies nothing.
* the connection outlives any one call, so it is not a context manager.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.h3 import events as h3_events
from qh3.h3.connection import H3_ALPN, ErrorCode, H3Connection, Setting
from qh3.quic import events as quic_events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection

from protoc_gen_localfirst.runtime.http3.certcheck import explain_refusal
from protoc_gen_localfirst.runtime.http3.options import SEND_HIGH_WATER, SEND_LOW_WATER
from protoc_gen_localfirst.runtime.http3.quiclib import (
    StaticTableEncoder,
    skip_unlogged_packet_parsing,
)
from protoc_gen_localfirst.runtime.http3.udp import size_buffers
from protoc_gen_localfirst.runtime.tls import ClientTls, system_ca_bundle

# Backpressure: a sender waits once SEND_HIGH_WATER is queued on its stream,
# and resumes once the queue is below SEND_LOW_WATER (QUIC flow control and
# congestion control drain it as the peer acknowledges and grants credit).


class ConnectFailed(Exception):
    """The QUIC/TLS handshake failed, timed out or the address was unreachable.

    ``tls_alert`` is set when TLS itself failed (a certificate that does not
    verify, no common protocol): the server answered, so this is never a
    reason to try another transport.
    """

    def __init__(self, reason: str, *, tls_alert: int | None = None) -> None:
        super().__init__(reason)
        self.tls_alert = tls_alert


class StreamListener(Protocol):
    """What a request stream's owner (an HTTP/3 call) is told."""

    def h3_event(self, event: h3_events.H3Event) -> None: ...

    def connection_lost(self, reason: str) -> None: ...


class _ClientH3Connection(H3Connection):
    """qh3's H3Connection, lenient about one server misconfiguration, encoding
    headers without the QPACK dynamic table (``quiclib.StaticTableEncoder``).

    qh3 servers always send SETTINGS_H3_DATAGRAM=1; unless their
    ``max_datagram_frame_size`` is set they omit the matching transport
    parameter, and RFC 9297 has the client close the connection
    (H3_SETTINGS_ERROR). This client never uses datagrams, so it ignores the
    setting in that case instead of refusing every such server.
    """

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self._encoder = StaticTableEncoder(self._encoder)  # type: ignore[assignment]

    def _validate_settings(self, settings: dict[int, int]) -> None:
        if getattr(self._quic, "_remote_max_datagram_frame_size", 0) is None:
            ignored = (Setting.H3_DATAGRAM, Setting.H3_DATAGRAM_DRAFT05)
            settings = {key: value for key, value in settings.items() if key not in ignored}
        super()._validate_settings(settings)

    def sending_aborted(self, stream_id: int) -> None:
        """We reset our side of ``stream_id``: drop the stream's state once the peer's side ended.

        qh3 keeps a stream until both directions ended, and it learns of our
        end only from ``send_data(end_stream=True)``, not from a reset.
        """
        stream = self._stream.get(stream_id)
        if stream is not None:
            stream.sending_ended = True
            self._maybe_cleanup_stream(stream)


class H3ClientProtocol(QuicConnectionProtocol):
    """A client QUIC connection speaking HTTP/3; see the module docstring."""

    def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
        super().__init__(quic, stream_handler)
        skip_unlogged_packet_parsing(quic)
        self._http = _ClientH3Connection(quic)
        self._listeners: dict[int, StreamListener] = {}
        self._writers: dict[int, asyncio.Future[None]] = {}
        self._send_stopped: set[int] = set()
        self._send_ended: set[int] = set()
        """Streams whose request ended (FIN queued, or our side reset)."""
        self._credit_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._woken = 0
        """Credit waiters woken whose task has not resumed yet: each holds one
        stream of the credit, so calls started meanwhile cannot take it (they
        would, as their tasks often run first, and starve the woken ones)."""
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ended: str | None = None
        """Why the connection ended, or None while it is usable."""
        self.goaway = False
        """The server sent GOAWAY: finish open streams, open new ones elsewhere."""
        self.on_end: Callable[[H3ClientProtocol], None] = lambda protocol: None

    @property
    def usable(self) -> bool:
        """Whether new calls may start streams here."""
        return self.ended is None and not self.goaway and self._handshake.done()

    @property
    def active_streams(self) -> int:
        return len(self._listeners)

    @property
    def held_streams(self) -> dict[str, int]:
        """Request streams still held, per layer: calls, HTTP/3 state, open QUIC streams.

        All zero once every call ended and the server closed its sides (tests
        watch this for leaks; an open QUIC stream also holds the server's
        MAX_STREAMS credit).
        """
        core = getattr(self._quic, "_core", None)
        quic = int(core.active_local_streams[0]) if core is not None else 0
        http = sum(1 for stream_id in self._http._stream if stream_id % 4 == 0)
        return {"calls": len(self._listeners), "http3": http, "quic": quic}

    async def wait_handshake(self) -> None:
        await asyncio.shield(self._handshake)

    def can_start_now(self) -> bool:
        """Whether a call may open its stream right now, without waiting for anything."""
        return (
            self.ended is None
            and not self.goaway
            and not self._credit_waiters
            and self._handshake.done()
            and self._free_streams() > 0
        )

    def _free_streams(self) -> int:
        """Streams we may open now and no woken waiter holds."""
        # The peer's MAX_STREAMS is cumulative: stream N (id 4N) may open while N < limit.
        next_index = self._quic.get_next_available_stream_id() // 4
        return int(self._quic.max_concurrent_bidi_streams) - next_index - self._woken

    async def wait_stream_credit(self) -> None:
        """Wait until the server lets us open one more request stream (MAX_STREAMS).

        Like HTTP/2's MAX_CONCURRENT_STREAMS in grpc: calls beyond the limit
        queue (within their deadline) instead of failing.
        """
        if self.ended is not None or (not self._credit_waiters and self._free_streams() > 0):
            return
        # FIFO: transmit() wakes the oldest waiters, only as many as there are
        # streams to open (not every waiter after every datagram); one that
        # finds the credit taken (a new call was quicker) waits again in front.
        front = False
        while True:
            waiter = self._loop.create_future()
            if front:
                self._credit_waiters.appendleft(waiter)
            else:
                self._credit_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._credit_waiters:
                    self._credit_waiters.remove(waiter)
                elif not waiter.cancelled():  # woken, then cancelled: pass the credit on
                    self._woken -= 1
                    self.credit_unused()
                raise
            self._woken -= 1  # the stream it held is ours now (the caller opens it at once)
            if self.ended is not None or self._free_streams() > 0:
                return
            front = True

    def credit_unused(self) -> None:
        """A call woken by ``wait_stream_credit`` opens no stream: wake the next waiter."""
        if self._credit_waiters:
            self._loop.call_soon(self._wake_credit_waiters)

    def start_request(self, listener: StreamListener, headers: list[tuple[bytes, bytes]]) -> int:
        """Open a request stream, send its headers, and route its events to ``listener``."""
        if self.ended is not None:
            raise ConnectionError(self.ended)
        stream_id = self._quic.get_next_available_stream_id()
        try:
            self._http.send_headers(stream_id, headers)
        except Exception as error:
            raise ConnectionError(f"cannot open a stream: {error}") from error
        self._listeners[stream_id] = listener
        self._transmit_soon()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        """Queue one DATA frame; a no-op once the stream or connection is gone."""
        if self.ended is not None or stream_id not in self._listeners:
            return
        if stream_id in self._send_stopped or stream_id in self._send_ended:
            return  # the server asked us to stop sending (STOP_SENDING): drop the rest
        self._http.send_data(stream_id, data, end_stream)
        if end_stream:
            self._send_ended.add(stream_id)
        self._transmit_soon()

    async def wait_writable(self, stream_id: int) -> None:
        """Return once ``stream_id`` has little enough queued to accept more data."""
        if self.ended is not None or stream_id not in self._listeners:
            return
        if self._quic.get_send_buffer_size(stream_id) <= SEND_HIGH_WATER:
            return
        waiter = self._writers.get(stream_id)
        if waiter is None:
            waiter = self._writers[stream_id] = self._loop.create_future()
        await asyncio.shield(waiter)

    def cancel_stream(
        self, stream_id: int, error_code: int = ErrorCode.H3_REQUEST_CANCELLED
    ) -> None:
        """RESET_STREAM + STOP_SENDING: we neither send nor want more on ``stream_id``."""
        if self._listeners.pop(stream_id, None) is None:
            return
        if self.ended is None:
            with contextlib.suppress(Exception):  # that side of the stream already ended
                self._quic.stop_stream(stream_id, error_code)
            self._end_sending(stream_id, error_code, always=True)
        self._forget(stream_id)

    def finish_stream(self, stream_id: int) -> None:
        """The call is over (status received): forget the stream.

        If the request was not all sent (the server answered early, e.g. it
        refused a message over its limit), our side is reset with
        H3_NO_ERROR (RFC 9114 4.1): unsent data is dropped and the stream
        closes, so the server's stream credit (MAX_STREAMS) comes back.
        """
        if self._listeners.pop(stream_id, None) is not None and self.ended is None:
            self._end_sending(stream_id, ErrorCode.H3_NO_ERROR)
        self._forget(stream_id)

    def shutdown(self) -> None:
        """Close the connection (CONNECTION_CLOSE, no error) and its socket."""
        self._end("the channel was closed")
        self.close()
        if self._transport is not None:
            self._loop.call_soon(self._transport.close)

    # qh3 hooks

    def quic_event_received(self, event: quic_events.QuicEvent) -> None:
        if isinstance(event, quic_events.HandshakeCompleted):
            if not self._handshake.done():
                self._handshake.set_result(None)
        elif isinstance(event, quic_events.ConnectionTerminated):
            self._terminated(event)
            return
        for http_event in self._http.handle_event(event):
            if isinstance(http_event, h3_events.GoawayReceived):
                self.goaway = True
                continue
            stream_id = getattr(http_event, "stream_id", None)
            listener = self._listeners.get(stream_id) if stream_id is not None else None
            if listener is not None:
                if isinstance(http_event, h3_events.StopSending):
                    # RFC 9000 3.5: answer STOP_SENDING with RESET_STREAM (its code);
                    # the response may still come and is read to its end.
                    self._send_stopped.add(http_event.stream_id)
                    self._end_sending(http_event.stream_id, http_event.error_code)
                    self._wake_writer(http_event.stream_id)
                listener.h3_event(http_event)
        self._check_closing()

    def transmit(self) -> None:
        super().transmit()
        if self._credit_waiters:
            self._wake_credit_waiters()
        if self._writers:
            for stream_id in list(self._writers):
                if self._quic.get_send_buffer_size(stream_id) <= SEND_LOW_WATER:
                    self._wake_writer(stream_id)

    def error_received(self, exc: Exception) -> None:
        # Connected UDP socket: ICMP port/host unreachable arrives here.
        self._end(f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc))
        self._quic.close()
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"socket closed: {exc}" if exc else "socket closed")

    # private

    def _wake_credit_waiters(self) -> None:
        """Wake the oldest waiters, one per stream the peer lets us open now (all once ended)."""
        waiters = self._credit_waiters
        available = len(waiters) if self.ended is not None else self._free_streams()
        while waiters and available > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                available -= 1

    def _check_closing(self) -> None:
        """End now if qh3 decided to close (e.g. an HTTP/3 protocol error).

        qh3 emits ``ConnectionTerminated`` only after the closing period; no new
        stream may start meanwhile, and calls on this connection are lost.
        """
        closing = getattr(self._quic, "_close_event", None)
        if closing is not None and self.ended is None:
            self._terminated(closing)

    def _terminated(self, event: quic_events.ConnectionTerminated) -> None:
        handshaking = not self._handshake.done()
        alert = _tls_alert(event) if handshaking else None
        reason = _termination_reason(event, handshaking=handshaking)
        certificate = self._quic.get_peercert() if alert == _BAD_CERTIFICATE else None
        if certificate is not None:
            configuration = self._quic.configuration
            why = explain_refusal(
                certificate,
                server_name=configuration.server_name or "",
                ca_file=configuration.cafile,
            )
            reason += f" ({why})" if why else ""
        self._end(reason, tls_alert=alert)

    def _end_sending(self, stream_id: int, error_code: int, *, always: bool = False) -> None:
        """Reset our side of ``stream_id`` unless the whole request went out.

        ``always``: reset even then (a cancelled call: the server must stop too).
        """
        all_sent = stream_id in self._send_ended and self._quic.get_send_buffer_size(stream_id) == 0
        if all_sent and not always:
            return
        self._send_ended.add(stream_id)
        with contextlib.suppress(Exception):  # our side already ended
            self._quic.reset_stream(stream_id, error_code)
        self._http.sending_aborted(stream_id)
        self._transmit_soon()

    def _forget(self, stream_id: int) -> None:
        self._send_stopped.discard(stream_id)
        self._send_ended.discard(stream_id)
        self._wake_writer(stream_id)

    def _wake_writer(self, stream_id: int) -> None:
        waiter = self._writers.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, reason: str, *, tls_alert: int | None = None) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        if not self._handshake.done():
            self._handshake.set_exception(ConnectFailed(reason, tls_alert=tls_alert))
            self._handshake.exception()  # retrieved: nobody may be waiting
        for stream_id in list(self._writers):
            self._wake_writer(stream_id)
        self._wake_credit_waiters()
        listeners, self._listeners = self._listeners, {}
        for listener in listeners.values():
            listener.connection_lost(reason)
        self.on_end(self)


_BAD_CERTIFICATE = 42
"""The TLS alert qh3 sends when it refuses the server's certificate."""


def _tls_alert(event: quic_events.ConnectionTerminated) -> int | None:
    """The TLS alert a QUIC CRYPTO_ERROR carries (RFC 9001 section 4.8), if any."""
    code = event.error_code
    return code - 0x100 if 0x100 <= code <= 0x1FF else None


def _termination_reason(event: quic_events.ConnectionTerminated, *, handshaking: bool) -> str:
    what = "QUIC handshake failed" if handshaking else "connection closed"
    reason = event.reason_phrase or "no reason given"
    code = event.error_code
    alert = _tls_alert(event)
    if handshaking and alert is not None:
        return f"{what}: TLS alert {alert}: {reason}"
    if code == 0 and not handshaking:
        return f"{what}: {reason}"
    return f"{what} (error 0x{code:x}): {reason}"


def client_configuration(host: str, tls: ClientTls, *, idle_timeout: float) -> QuicConfiguration:
    """TLS + QUIC settings of a client connection to ``host`` (an IP or host name).

    The certificate is verified against ``tls.server_name`` (else ``host``),
    which is also the SNI; IP addresses are matched against IP SANs.
    """
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=idle_timeout,
        server_name=tls.server_name or host,
    )
    if tls.skip_verify:
        configuration.verify_mode = ssl.CERT_NONE
    else:
        ca_file = tls.ca_file or system_ca_bundle()
        if ca_file is not None:  # else qh3 asks the ssl module for the defaults
            configuration.load_verify_locations(cafile=ca_file)
    if tls.certfile is not None:
        configuration.load_cert_chain(tls.certfile, tls.keyfile)
    return configuration


async def open_connection(
    host: str, port: int, configuration: QuicConfiguration, timeout: float
) -> H3ClientProtocol:
    """Handshake with ``host:port`` over a connected UDP socket; ``ConnectFailed`` on failure."""
    from qh3.asyncio._transport import create_optimized_datagram_transport

    loop = asyncio.get_running_loop()
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise ConnectFailed(f"cannot resolve {host}: {error}") from error
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        size_buffers(sock)
        sock.setblocking(False)
        sock.connect(address)
    except OSError as error:
        sock.close()
        raise ConnectFailed(f"UDP socket to {where}: {error}") from error
    connection = QuicConnection(configuration=configuration)
    transport, protocol = await create_optimized_datagram_transport(
        loop, lambda: H3ClientProtocol(connection), sock=sock
    )
    assert isinstance(protocol, H3ClientProtocol)
    try:
        protocol.connect(address)
        await asyncio.wait_for(protocol.wait_handshake(), timeout)
    except TimeoutError:
        protocol.shutdown()
        transport.close()
        raise ConnectFailed(f"no QUIC handshake with {where} within {timeout:g}s") from None
    except ConnectFailed:
        transport.close()
        raise
    except BaseException:
        protocol.shutdown()
        transport.close()
        raise
    return protocol

"""The HTTP/3 side of one QUIC connection on the server: events in, calls out.

``H3ConnectionHandler`` turns request HEADERS into ``H3ServerCall``s (or
refuses them), routes DATA, resets and STOP_SENDING to them, sends GOAWAY on
drain, and releases every call once the connection is closing: on the
peer's (or our) CONNECTION_CLOSE, not only at ``ConnectionTerminated``,
which qh3 and aioquic emit after the closing or draining period (three probe
timeouts, seconds when the RTT estimate is high) while nothing can be sent
or received any more.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Protocol

from protoc_gen_localfirst.runtime.http3.budget import BufferBudget
from protoc_gen_localfirst.runtime.http3.dispatch import Dispatcher
from protoc_gen_localfirst.runtime.http3.options import SEND_HIGH_WATER
from protoc_gen_localfirst.runtime.http3.quiclib import QuicLib, send_backlog
from protoc_gen_localfirst.runtime.http3.server_call import H3ServerCall
from protoc_gen_localfirst.runtime.wire import (
    H3Error,
    WireError,
    build_trailers_only,
    parse_request_headers,
)

__all__ = ["H3ConnectionHandler"]

_LOG = logging.getLogger("protoc_gen_localfirst.h3_server")

CONNECTION_REFUSED = 0x2
"""QUIC transport error: the server refuses to accept a new connection (RFC 9000, 20.1)."""

_FINISHED_MEMORY = 1024
"""Recently finished stream ids remembered per connection, so late frames for
them are ignored rather than taken as new requests."""


class ConnectionOwner(Protocol):
    """What a connection needs from its listener (``H3Server``)."""

    lib: QuicLib
    h3_class: Any
    dispatcher: Dispatcher
    max_message_size: int
    budget: BufferBudget[H3ServerCall]
    closing: bool

    def connection_closed(self, conn: H3ConnectionHandler) -> None: ...


class H3ConnectionHandler:
    """The HTTP/3 side of one QUIC connection: events in, calls out."""

    def __init__(self, server: ConnectionOwner, protocol: Any) -> None:
        self.server = server
        self.protocol = protocol
        self.quic: Any = protocol._quic
        self.h3: Any = None  # created once ALPN picked h3, as aioquic's examples do
        self.calls: dict[int, H3ServerCall] = {}
        self._finished: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._highest_stream = -4
        self.goaway_id: int | None = None
        self.peer = "unknown"
        self.closed = False
        self._progress = asyncio.Event()
        self._writers_waiting = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- called by the protocol --------------------------------------------

    def quic_event(self, event: Any) -> None:
        lib = self.server.lib
        if (
            isinstance(event, lib.StreamDataReceived)
            and event.stream_id in self._finished
            and event.stream_id not in self.calls
        ):
            return  # late data for a stream we are done with
        if isinstance(event, lib.ConnectionTerminated):
            self.closed = True
            for call in list(self.calls.values()):
                call.client_cancelled()
            self.progress()
            self.server.connection_closed(self)
            return
        if self.h3 is None:
            if isinstance(event, lib.ProtocolNegotiated) and event.alpn_protocol in lib.H3_ALPN:
                self.h3 = self.server.h3_class(self.quic)
                self.h3.on_stream_error = self._on_stream_error
                if self.server.closing:
                    self.goaway()
            return
        if isinstance(event, lib.StreamReset | lib.StopSendingReceived):
            reset = self.calls.get(event.stream_id)
            if reset is not None:
                reset.client_cancelled()
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, lib.HeadersReceived):
                self._on_headers(h3_event.stream_id, h3_event.headers, h3_event.stream_ended)
            elif isinstance(h3_event, lib.DataReceived):
                target = self.calls.get(h3_event.stream_id)
                if target is not None:
                    target.feed(h3_event.data, h3_event.stream_ended)

    def refuse_connection(self) -> None:
        """The server is at ``max_connections``: close this new connection at once
        (QUIC CONNECTION_REFUSED). No request was processed; the client may try
        another server."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.quic.close(
                error_code=CONNECTION_REFUSED, reason_phrase="server at max_connections"
            )
        # Before the first Initial packet was taken there is nothing to close yet.
        self.closed = getattr(self.quic, "_close_event", None) is not None
        with contextlib.suppress(Exception):
            self.protocol.transmit()

    def check_closing(self) -> None:
        """After datagrams came in: release every call if the connection is closing.

        The peer's CONNECTION_CLOSE (or ours, e.g. for an HTTP/3 protocol
        error) sets the library's ``_close_event`` at once, but
        ``ConnectionTerminated`` only comes after the closing or draining
        period; calls could neither send nor receive meanwhile, so they end
        now, as on a reset by the client.
        """
        if self.closed or getattr(self.quic, "_close_event", None) is None:
            return
        self.closed = True
        for call in list(self.calls.values()):
            call.client_cancelled()
        self.progress()

    def progress(self) -> None:
        """Datagrams came in or went out: wake writers waiting for room."""
        if self._writers_waiting:  # else nobody listens: no new Event per transmit
            self._progress.set()
            self._progress = asyncio.Event()

    @property
    def held_streams(self) -> dict[str, int]:
        """Request streams still held, per layer: calls and HTTP/3 state (tests watch this)."""
        streams = getattr(self.h3, "_stream", {})
        http = sum(1 for stream_id in streams if stream_id % 4 == 0)
        return {"calls": len(self.calls), "http3": http}

    # --- used by calls ---------------------------------------------------------

    @property
    def dispatcher(self) -> Dispatcher:
        return self.server.dispatcher

    @property
    def max_message_size(self) -> int:
        return self.server.max_message_size

    @property
    def budget(self) -> BufferBudget[H3ServerCall]:
        return self.server.budget

    def transmit(self) -> None:
        if not self.closed:
            self.protocol.transmit()

    def transmit_soon(self) -> None:
        """Transmit once the event loop's current pass is over: the answers of
        every call that finished in it leave together (fewer datagrams and
        system calls than one transmit per call)."""
        if not self.closed:
            self.protocol._transmit_soon()

    async def wait_writable(self, call: H3ServerCall) -> None:
        while (
            not self.closed
            and not call.finished
            and send_backlog(self.quic, call.stream_id) > SEND_HIGH_WATER
        ):
            self._writers_waiting += 1
            try:
                await self._progress.wait()
            finally:
                self._writers_waiting -= 1
        if self.closed:
            raise asyncio.CancelledError()

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._remember_finished(stream_id)
        self._forget_h3_stream(stream_id)
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.quic.reset_stream(stream_id, error_code)
        with contextlib.suppress(Exception):
            self.quic.stop_stream(stream_id, error_code)
        self.transmit()

    def forget(self, call: H3ServerCall) -> None:
        if self.calls.get(call.stream_id) is call:
            del self.calls[call.stream_id]
            self._remember_finished(call.stream_id)
            self._forget_h3_stream(call.stream_id)
        if not self.calls:
            self._idle.set()

    # --- drain -----------------------------------------------------------------

    def goaway(self) -> None:
        """Send GOAWAY: requests on streams from the next unseen id are refused."""
        if self.goaway_id is not None or self.closed:
            return
        self.goaway_id = self._highest_stream + 4
        control = self.h3._local_control_stream_id if self.h3 is not None else None
        if control is not None:
            lib = self.server.lib
            frame = lib.encode_frame(lib.GOAWAY, lib.encode_uint_var(self.goaway_id))
            with contextlib.suppress(Exception):
                self.quic.send_stream_data(control, frame)
        self.transmit()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.quic.close(error_code=H3Error.NO_ERROR, reason_phrase="server stopping")
        with contextlib.suppress(Exception):
            self.protocol.transmit()
        self.progress()

    # --- internals -----------------------------------------------------------------

    def _forget_h3_stream(self, stream_id: int) -> None:
        """Our side of the stream is done and later request data is dropped
        (``quic_event``): the HTTP/3 layer need not keep the stream either."""
        forget_stream = getattr(self.h3, "forget_stream", None)
        if forget_stream is not None:
            forget_stream(stream_id)

    def _remember_finished(self, stream_id: int) -> None:
        self._finished[stream_id] = None
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _on_stream_error(self, stream_id: int, reason: str) -> None:
        _LOG.debug("stream %d malformed: %s", stream_id, reason)
        call = self.calls.get(stream_id)
        if call is not None:
            call.client_cancelled()
        self._highest_stream = max(self._highest_stream, stream_id)
        self.reset_stream(stream_id, H3Error.MESSAGE_ERROR)

    def _on_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        call = self.calls.get(stream_id)
        if call is not None:  # request trailers: only the end of the stream matters
            if ended:
                call.feed(b"", True)
            return
        if stream_id in self._finished:
            return
        self._highest_stream = max(self._highest_stream, stream_id)
        if self.goaway_id is not None and stream_id >= self.goaway_id or self.server.closing:
            self.reset_stream(stream_id, H3Error.REQUEST_REJECTED)
            return
        try:
            head = parse_request_headers(headers)
        except WireError as error:
            self._refuse(stream_id, error, ended)
            return
        self._idle.clear()
        self.calls[stream_id] = H3ServerCall(self, stream_id, head, ended)

    def _refuse(self, stream_id: int, error: WireError, ended: bool) -> None:
        if error.h3_error is not None:
            self.reset_stream(stream_id, error.h3_error)
            return
        self._remember_finished(stream_id)
        try:
            self.h3.send_headers(
                stream_id,
                build_trailers_only(error.status, error.message, http_status=error.http_status),
                end_stream=True,
            )
            if not ended:
                self.quic.stop_stream(stream_id, H3Error.NO_ERROR)
        except Exception as send_error:  # noqa: BLE001 - stream or connection already gone
            _LOG.debug("cannot refuse stream %d: %s", stream_id, send_error)
        self._forget_h3_stream(stream_id)
        self.transmit()

"""A raw HTTP/3 client on qh3 for tests: sends anything, records everything.

    async with RawClient.connect(port, tls.ca) as client:
        sid = client.stream()
        client.headers(sid, request_headers("/greeter.v1.Greeter/SayHello"))
        client.data(sid, encode_message(payload), end=True)   # a DATA frame
        client.raw(sid, b"\\x00\\x03garbage")                  # bytes on the stream, no framing
        client.reset(sid)                                      # RESET_STREAM + STOP_SENDING
        response = await client.response(sid)                  # Response: headers, messages, trailers, reset

Nothing is validated on the way out (qh3 does not check sent headers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from qh3.asyncio.client import connect
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.h3.connection import H3_ALPN, H3Connection
from qh3.h3.events import DataReceived, GoawayReceived, HeadersReceived
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.events import ConnectionTerminated, StopSendingReceived, StreamReset

from protoc_gen_localfirst.runtime.wire import (
    H3Error,
    MessageDecoder,
    Status,
    build_request_headers,
    parse_response_headers,
    parse_trailers,
)


def request_headers(
    path: str, *, timeout: float | None = None, **metadata: str
) -> list[tuple[bytes, bytes]]:
    return build_request_headers(
        path, authority="localhost", timeout=timeout, metadata=list(metadata.items())
    )


@dataclass
class Response:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset_code: int | None = None
    ended: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[bytes]:
        return MessageDecoder(max_message_size=None).feed(bytes(self.data))

    @property
    def status(self) -> Status:
        """The gRPC status: trailers-only, trailers, or mapped from a reset."""
        if self.reset_code is not None:
            return Status(grpc.StatusCode.INTERNAL, f"reset 0x{self.reset_code:x}")
        head = parse_response_headers(self.headers)
        if head.status is not None:
            return head.status
        return parse_trailers(self.trailers)

    @property
    def http_status(self) -> int:
        return parse_response_headers(self.headers).http_status


class _Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, Response] = {}
        self.goaway: int | None = None
        self.goaway_event = asyncio.Event()
        self.terminated = asyncio.Event()
        self.answer_stop_sending = False
        """Reset our side on STOP_SENDING, as RFC 9000 3.5 asks (and real clients do)."""

    def response(self, sid: int) -> Response:
        return self.responses.setdefault(sid, Response())

    def quic_event_received(self, event: Any) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated.set()
            for response in self.responses.values():
                response.done.set()
        if isinstance(event, StopSendingReceived) and self.answer_stop_sending:
            with contextlib.suppress(Exception):  # our side already ended
                self._quic.reset_stream(event.stream_id, event.error_code)
        if isinstance(event, StreamReset):
            response = self.response(event.stream_id)
            response.reset_code = event.error_code
            response.done.set()
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                response = self.response(h3_event.stream_id)
                if response.headers:
                    response.trailers = list(h3_event.headers)
                else:
                    response.headers = list(h3_event.headers)
                if h3_event.stream_ended:
                    response.ended = True
                    response.done.set()
            elif isinstance(h3_event, DataReceived):
                response = self.response(h3_event.stream_id)
                response.data += h3_event.data
                if h3_event.stream_ended:
                    response.ended = True
                    response.done.set()
            elif isinstance(h3_event, GoawayReceived):
                self.goaway = h3_event.stream_id
                self.goaway_event.set()


class RawClient:
    def __init__(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        self.quic = protocol._quic
        self.h3 = protocol.h3
        self._next = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, port: int, ca: Path, host: str = "127.0.0.1"
    ) -> AsyncIterator[RawClient]:
        configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        configuration.load_verify_locations(str(ca))
        async with connect(
            host, port, configuration=configuration, create_protocol=_Protocol
        ) as protocol:
            assert isinstance(protocol, _Protocol)
            yield cls(protocol)

    @property
    def closed(self) -> bool:
        return self.protocol.terminated.is_set()

    def stream(self) -> int:
        """A fresh client bidi stream id (own counter: qh3's can repeat an id
        whose stream the server reset before we used it further)."""
        sid = max(self._next, int(self.quic.get_next_available_stream_id()))
        self._next = sid + 4
        self.protocol.response(sid)
        return sid

    async def stream_credit(self, timeout: float = 5.0) -> None:
        """Wait until the server lets us open one more stream (its MAX_STREAMS
        comes once it has seen our ACKs of closed streams)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while max(self._next, int(self.quic.get_next_available_stream_id())) // 4 >= int(
            self.quic.max_concurrent_bidi_streams
        ):
            if loop.time() > deadline:
                raise TimeoutError("no stream credit from the server")
            await asyncio.sleep(0.001)

    def headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool = False) -> None:
        self.h3.send_headers(sid, headers, end_stream=end)
        self.protocol.transmit()

    def data(self, sid: int, payload: bytes, end: bool = False) -> None:
        self.h3.send_data(sid, payload, end_stream=end)
        self.protocol.transmit()

    def raw(self, sid: int, payload: bytes, end: bool = False) -> None:
        self.quic.send_stream_data(sid, payload, end)
        self.protocol.transmit()

    def reset(self, sid: int, code: int = H3Error.REQUEST_CANCELLED) -> None:
        self.quic.reset_stream(sid, code)
        self.quic.stop_stream(sid, code)
        self.protocol.transmit()

    async def response(self, sid: int, timeout: float = 5.0) -> Response:
        response = self.protocol.response(sid)
        await asyncio.wait_for(response.done.wait(), timeout)
        return response

    async def call(
        self, path: str, payloads: list[bytes], *, timeout: float | None = None, **metadata: str
    ) -> Response:
        """A whole well-formed call: headers, length-prefixed payloads, FIN."""
        from protoc_gen_localfirst.runtime.wire import encode_message

        await self.stream_credit()
        sid = self.stream()
        self.headers(sid, request_headers(path, timeout=timeout, **metadata))
        self.data(sid, b"".join(encode_message(p) for p in payloads), end=True)
        return await self.response(sid)

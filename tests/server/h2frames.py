"""A minimal raw HTTP/2 gRPC caller that reports which frames a response used.

grpc's Python client cannot tell "empty response headers, then trailers"
from "trailers-only" (both show up as empty initial metadata), but the
difference is what a retrying client sees (gRFC A6: headers commit a call).
This speaks just enough HTTP/2 to send one unary gRPC request and list the
HEADERS/DATA frames of the response stream. HPACK: the request uses literal
fields without Huffman; the response header blocks are not decoded.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK = 0x1, 0x1
FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", RST_STREAM: "RST_STREAM"}


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    stream: int
    payload: bytes

    @property
    def end_stream(self) -> bool:
        return self.type in (DATA, HEADERS) and bool(self.flags & END_STREAM)

    def describe(self) -> str:
        name = FRAME_NAMES.get(self.type, hex(self.type))
        return f"{name}+END_STREAM" if self.end_stream else name


def _frame(type_: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([type_, flags])
        + stream.to_bytes(4, "big")
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    # Literal Header Field without Indexing, new name, no Huffman (RFC 7541 6.2.2).
    raw_name, raw_value = name.encode(), value.encode()
    return (
        b"\x00"
        + _hpack_int(len(raw_name), 7)
        + raw_name
        + _hpack_int(len(raw_value), 7)
        + raw_value
    )


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        data += chunk
    return bytes(data)


def call_frames(
    host: str,
    port: int,
    path: str,
    message: bytes,
    timeout: float = 10.0,
    *,
    send_body: bool = True,
) -> list[Frame]:
    """Send one unary gRPC request; return the HEADERS/DATA/RST frames of its response.

    ``send_body=False``: send the request headers only (no DATA, no END_STREAM)
    and wait for whatever the server answers without the body.
    """
    headers = b"".join(
        _literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", f"{host}:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(
            PREFACE
            + _frame(SETTINGS, 0, 0)
            + _frame(HEADERS, 0x4, 1, headers)  # END_HEADERS
            + (_frame(DATA, END_STREAM, 1, body) if send_body else b"")
        )
        frames: list[Frame] = []
        while True:
            head = _read_exact(sock, 9)
            length = int.from_bytes(head[:3], "big")
            frame = Frame(
                head[3],
                head[4],
                int.from_bytes(head[5:9], "big") & 0x7FFFFFFF,
                _read_exact(sock, length),
            )
            if frame.type == SETTINGS and not frame.flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0))
            elif frame.type == PING and not frame.flags & ACK:
                sock.sendall(_frame(PING, ACK, 0, frame.payload))
            elif frame.type == GOAWAY:
                raise ConnectionError(f"GOAWAY before the response ended: {frames}")
            elif frame.stream == 1 and frame.type in FRAME_NAMES:
                frames.append(frame)
                if frame.end_stream or frame.type == RST_STREAM:
                    return frames


MAX_CONCURRENT_STREAMS = 0x3


def server_settings(host: str, port: int, timeout: float = 10.0) -> dict[int, int]:
    """The parameters of the server's first SETTINGS frame (RFC 9113, 6.5.1)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(PREFACE + _frame(SETTINGS, 0, 0))
        while True:
            head = _read_exact(sock, 9)
            payload = _read_exact(sock, int.from_bytes(head[:3], "big"))
            if head[3] == SETTINGS and not head[4] & ACK:
                return {
                    int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(
                        payload[i + 2 : i + 6], "big"
                    )
                    for i in range(0, len(payload), 6)
                }

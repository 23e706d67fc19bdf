"""Both QUIC listeners and the client's sockets ask for big UDP buffers (``http3.udp``).

With the kernel's default 208 KiB, a burst larger than the buffer is dropped
while the event loop is busy, and every drop costs a retransmission and a
congestion-window cut (see BENCHMARKS.md, HTTP/3 streaming).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from greeter.v1 import greeter_pb2

from protoc_gen_localfirst.runtime.http3.channel import H3Channel
from protoc_gen_localfirst.runtime.http3.udp import UDP_BUFFER_BYTES
from protoc_gen_localfirst.runtime.tls import ClientTls
from tests.http3.server.conftest import serve
from tests.support.certs import TlsFiles

RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())
RMEM_DEFAULT = int(Path("/proc/sys/net/core/rmem_default").read_text())
GRANTED = min(UDP_BUFFER_BYTES, RMEM_MAX)
"""What the kernel grants when asked for ``UDP_BUFFER_BYTES`` (at most rmem_max)."""


def _receive_buffer(sock: object) -> int:
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))  # type: ignore[attr-defined]


@pytest.mark.parametrize("library", ["qh3", "aioquic"])
async def test_the_listener_and_the_client_socket_get_big_receive_buffers(
    tls_files: TlsFiles, library: str
) -> None:
    if RMEM_MAX <= RMEM_DEFAULT:
        pytest.skip(
            f"net.core.rmem_max ({RMEM_MAX}) is not above rmem_default ({RMEM_DEFAULT}): "
            "no socket can get more than the default here (test_udp checks the log line)"
        )
    served = await serve(tls_files, quic_library=library)
    try:
        assert served.server.h3_server is not None
        listener = served.server.h3_server._listener._transport.get_extra_info("socket")
        assert _receive_buffer(listener) >= GRANTED
        async with H3Channel(
            "127.0.0.1", served.port, tls=ClientTls(ca_file=str(tls_files.ca))
        ) as channel:
            say = channel.unary_unary(
                "/greeter.v1.Greeter/SayHello",
                request_serializer=greeter_pb2.HelloRequest.SerializeToString,
                response_deserializer=greeter_pb2.HelloReply.FromString,
            )
            await say(greeter_pb2.HelloRequest(name="buffers"), timeout=10)
            connection = channel.ready_connection()
            assert connection is not None
            transport = connection._transport
            assert transport is not None
            assert _receive_buffer(transport.get_extra_info("socket")) >= GRANTED
    finally:
        await served.server.stop(0)

"""Interop with an independent gRPC-over-HTTP/3 client: ``buf curl --http3``.

buf exits with 8 x the gRPC status code; ``-v`` prints headers and trailers.
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc

from tests.http3.server.conftest import NODE, Served, buf_curl
from tests.http3.server.servicer import FAIL_MESSAGE


def _replies(stdout: str) -> list[str]:
    return re.findall(r'"message": "([^"]*)"', stdout)


def _received(stderr: str) -> list[str]:
    """The ``<`` lines of ``buf curl -v``: response headers, then trailers."""
    lines = (re.fullmatch(r"buf: < \(#\d+\) ?(.*)", line) for line in stderr.splitlines())
    return [match[1] for match in lines if match]


async def test_four_call_kinds(served: Served) -> None:
    unary, server_stream, client_stream, bidi = await asyncio.gather(
        buf_curl(served, "SayHello", "-d", '{"name":"world"}'),
        buf_curl(served, "LotsOfReplies", "-d", '{"name":"s","count":4}'),
        buf_curl(served, "LotsOfGreetings", "-d", "@-", stdin=b'{"name":"a"}\n{"name":"b"}\n'),
        buf_curl(
            served, "BidiHello", "-d", "@-", stdin=b'{"name":"x"}\n{"name":"y"}\n{"name":"z"}'
        ),
    )
    assert (unary.returncode, _replies(unary.stdout)) == (0, ["hello world"])
    assert _replies(server_stream.stdout) == ["s 0", "s 1", "s 2", "s 3"]
    assert _replies(client_stream.stdout) == ["hello a, b"]
    assert _replies(bidi.stdout) == ["hi x", "hi y", "hi z"]
    assert {r.returncode for r in (server_stream, client_stream, bidi)} == {0}
    assert served.server.h3_server is not None
    assert served.server.h3_server.calls_in_flight == 0


async def test_metadata_echoed_in_headers_and_trailers(served: Served) -> None:
    unary, stream = await asyncio.gather(
        *(
            buf_curl(
                served,
                method,
                "-v",
                "-H",
                "x-trace: abc-1",
                "-H",
                "x-blob-bin: AAEC/w",
                "-d",
                '{"name":"echo"}',
            )
            for method in ("SayHello", "LotsOfReplies")
        )
    )
    for result in (unary, stream):
        assert result.returncode == 0, result.stderr
        received = _received(result.stderr)
        blank = received.index("")  # headers end; trailers follow the data
        headers, trailers = received[:blank], received[blank + 1 :]
        for block in (headers, trailers):
            assert "X-Trace: abc-1" in block
            # sent padded or not, our side emits unpadded base64 of b"\x00\x01\x02\xff"
            assert "X-Blob-Bin: AAEC/w" in block
            assert f"Localfirst-Node: {NODE}" in block
        assert "Grpc-Status: 0" in trailers


async def test_error_message_with_non_ascii_and_control_characters(served: Served) -> None:
    result = await buf_curl(served, "SayHello", "-d", '{"name":"fail"}')
    assert result.returncode == 8 * grpc.StatusCode.NOT_FOUND.value[0]
    error = json.loads(result.stderr[result.stderr.index("{") :])
    assert error["code"] == "not_found"
    assert error["message"] == FAIL_MESSAGE


async def test_handler_exception_is_unknown(served: Served) -> None:
    result = await buf_curl(served, "SayHello", "-d", '{"name":"boom"}')
    assert result.returncode == 8 * grpc.StatusCode.UNKNOWN.value[0]
    assert "boom" in result.stderr


async def test_deadline_expires(served: Served) -> None:
    result = await buf_curl(served, "SayHello", "--timeout", "0.3s", "-d", '{"name":"sleep"}')
    assert result.returncode == 8 * grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "deadline_exceeded" in result.stderr
    # the server saw grpc-timeout and cancelled the handler itself
    for _ in range(50):
        if served.servicer.cancelled:
            break
        await asyncio.sleep(0.02)
    assert served.servicer.cancelled == ["sleep"]
    assert served.server.h3_server is not None
    assert served.server.h3_server.calls_in_flight == 0

"""All four call kinds, UNIMPLEMENTED, and the node announcement in metadata."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.loadreport import LOAD_REPORT_KEY
from protoc_gen_localfirst.runtime.server.bootstrap import Server
from tests.server.conftest import ECHO_SERVICE, NODE, Client, StartServer, md
from tests.server.h2frames import call_frames

pytestmark = pytest.mark.timeout(30)


def sv(text: str) -> StringValue:
    return StringValue(value=text)


async def test_unary(client: Client) -> None:
    call = client.say(sv("world"))
    assert (await call).value == "hello world"
    # Unary responses name the node in trailers only: headers, message and
    # status then go out in one write (see server_announce).
    assert NODE_METADATA_KEY not in md(await call.initial_metadata())
    assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_server_streaming(client: Client) -> None:
    call = client.expand(sv("x"))
    assert [r.value async for r in call] == ["x-0", "x-1", "x-2"]
    assert md(await call.initial_metadata())[NODE_METADATA_KEY] == NODE
    assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_client_streaming(client: Client) -> None:
    async def requests() -> AsyncIterator[StringValue]:
        for text in ("a", "b", "c"):
            yield sv(text)

    call = client.collect(requests())
    assert (await call).value == "a,b,c"
    assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_bidi_streaming(client: Client) -> None:
    call = client.chat()
    replies = []
    for text in ("a", "b"):
        await call.write(sv(text))
        reply = await call.read()
        assert isinstance(reply, StringValue)
        replies.append(reply.value)
    await call.done_writing()
    assert replies == ["A", "B"]
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert md(await call.initial_metadata())[NODE_METADATA_KEY] == NODE


async def test_empty_ok_stream_still_announces(client: Client) -> None:
    call = client.chat()
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert md(await call.initial_metadata())[NODE_METADATA_KEY] == NODE


@pytest.mark.parametrize("which", ["missing", "missing_stream"])
async def test_unimplemented_methods(client: Client, which: str) -> None:
    call = getattr(client, which)(sv("x"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if which == "missing":
            await call
        else:
            [r async for r in call]
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "Method not implemented!"
    assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE
    assert NODE_METADATA_KEY not in md(info.value.initial_metadata())


async def test_unknown_method_is_unimplemented_with_node(client: Client) -> None:
    for path in (f"/{ECHO_SERVICE.name}/NoSuchRpc", "/no.such.Service/Say"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.unary(path)(sv("x"))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_servicer_without_the_attribute_is_unimplemented(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    class OnlyCollect:  # duck-typed: has one of the service's methods, not Say
        async def Collect(self, request_iterator: object, context: object) -> StringValue:
            return sv("")

    client = client_for(await start(OnlyCollect()))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.say(sv("x"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in client.expand(sv("x"))]
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("unavailable", grpc.StatusCode.UNAVAILABLE),  # context.abort
        ("raise", grpc.StatusCode.UNKNOWN),  # exception from the handler
        ("set-code", grpc.StatusCode.UNAVAILABLE),  # set_code + return
    ],
)
async def test_error_before_response_names_node_in_trailers_only(
    client: Client, text: str, code: grpc.StatusCode
) -> None:
    call = client.say(sv(text))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code
    assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE
    # grpc's client shows no initial metadata at all: nothing was "committed".
    assert len(md(info.value.initial_metadata())) == 0


async def test_stream_error_before_first_message_has_no_headers(client: Client) -> None:
    call = client.expand(sv("unavailable"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in call]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(md(info.value.initial_metadata())) == 0
    assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_stream_error_after_messages_has_node_in_both(client: Client) -> None:
    call = client.expand(sv("fail-after"))
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for reply in call:
            got.append(reply.value)
    assert got == ["fail-after-0", "fail-after-1", "fail-after-2"]
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert md(info.value.initial_metadata())[NODE_METADATA_KEY] == NODE
    assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE


@pytest.mark.parametrize("text", ["unavailable", "raise", "set-code"])
async def test_error_is_trailers_only_on_the_wire(echo_server: Server, text: str) -> None:
    frames = await asyncio.to_thread(
        call_frames,
        echo_server.host,
        echo_server.port,
        f"/{ECHO_SERVICE.name}/Say",
        sv(text).SerializeToString(),
    )
    assert [f.describe() for f in frames] == ["HEADERS+END_STREAM"]


async def test_success_on_the_wire_has_headers_data_trailers(echo_server: Server) -> None:
    # The contrast to the trailers-only test: the frame checker does see headers.
    frames = await asyncio.to_thread(
        call_frames,
        echo_server.host,
        echo_server.port,
        f"/{ECHO_SERVICE.name}/Say",
        sv("x").SerializeToString(),
    )
    assert [f.describe() for f in frames] == ["HEADERS", "DATA", "HEADERS+END_STREAM"]


async def test_handler_sending_its_own_headers(client: Client) -> None:
    call = client.say(sv("own-headers"))
    await call
    initial = md(await call.initial_metadata())
    assert initial["x-user"] == "mine"
    assert initial[NODE_METADATA_KEY] == NODE
    assert [k for k, _ in await call.initial_metadata()].count(NODE_METADATA_KEY) == 1


async def test_handler_setting_its_own_trailers(client: Client) -> None:
    call = client.say(sv("own-trailers"))
    await call
    trailing = md(await call.trailing_metadata())
    assert isinstance(trailing.pop(LOAD_REPORT_KEY), bytes)  # the server's load, on every answer
    assert trailing == {"x-trailer": "mine", NODE_METADATA_KEY: NODE}


async def test_abort_with_trailers_keeps_both(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.say(sv("abort-with-trailers"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailing = md(info.value.trailing_metadata())
    assert isinstance(trailing.pop(LOAD_REPORT_KEY), bytes)
    assert trailing == {"x-trailer": "mine", NODE_METADATA_KEY: NODE}
    assert len(md(info.value.initial_metadata())) == 0


async def test_node_defaults_to_node_name_env(
    start: StartServer, client_for: Callable[[Server], Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.server.conftest import Echo

    monkeypatch.setenv("NODE_NAME", "from-downward-api")
    server = await start(Echo(), node=None)
    assert server.node == "from-downward-api"
    call = client_for(server).say(sv("x"))
    await call
    assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == "from-downward-api"


async def test_max_message_size(start: StartServer, client_for: Callable[[Server], Client]) -> None:
    from tests.server.conftest import Echo

    client = client_for(await start(Echo(), max_message_size=1024))
    assert (await client.say(sv("x" * 500))).value == "hello " + "x" * 500
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.say(sv("x" * 2000))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

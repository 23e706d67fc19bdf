"""bind_servicers matching rules, and plain grpc-style servicers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.server.bootstrap import Binding, Server, bind_servicers
from tests.server.conftest import (
    ECHO_SERVICE,
    NODE,
    OTHER_SERVICE,
    Client,
    Echo,
    EchoServicer,
    StartServer,
    md,
)

BOTH = (ECHO_SERVICE, OTHER_SERVICE)


# What grpc's protoc plugin generates in a *_pb2_grpc module (sync stubs).
class GrpcEchoServicer:
    def Say(self, request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    def Expand(self, request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")


class OtherServicer:
    def Ping(self, request: Any, context: Any) -> Any:
        raise NotImplementedError("Method not implemented!")


class PlainEcho(GrpcEchoServicer):
    async def Say(self, request: StringValue, context: Any) -> StringValue:
        return StringValue(value=f"plain {request.value}")


class PlainOther(OtherServicer):
    async def Ping(self, request: StringValue, context: Any) -> StringValue:
        return StringValue(value="pong")


def test_generated_subclass_binds_by_service_attribute() -> None:
    echo = Echo()
    assert bind_servicers(BOTH, [echo]) == [Binding(ECHO_SERVICE, echo)]


def test_single_service_accepts_any_servicer() -> None:
    plain = PlainEcho()
    assert bind_servicers([ECHO_SERVICE], [plain]) == [Binding(ECHO_SERVICE, plain)]


def test_several_services_match_grpc_class_names() -> None:
    echo, other = PlainEcho(), PlainOther()
    # PlainEcho's MRO has no "EchoServicer" (grpc's base is named after the
    # service, ours is too); PlainOther's has "OtherServicer".
    bindings = bind_servicers(BOTH, [other, Echo()])
    assert [(b.service, type(b.servicer)) for b in bindings] == [
        (OTHER_SERVICE, PlainOther),
        (ECHO_SERVICE, Echo),
    ]
    with pytest.raises(TypeError) as info:
        bind_servicers(BOTH, [echo])
    message = str(info.value)
    assert "PlainEcho" in message
    assert ECHO_SERVICE.name in message and OTHER_SERVICE.name in message
    assert "EchoServicer" in message and "OtherServicer" in message


def test_mro_name_match_works_for_grpc_named_base() -> None:
    class EchoServicer:  # the name grpc gives the base in echo_pb2_grpc
        pass

    class Impl(EchoServicer):
        async def Say(self, request: Any, context: Any) -> Any: ...

    impl = Impl()
    assert bind_servicers(BOTH, [impl]) == [Binding(ECHO_SERVICE, impl)]


def test_two_servicers_for_one_service() -> None:
    with pytest.raises(
        TypeError, match=r"two servicers for lftest\.v1\.Echo: .*Echo and .*PlainEcho"
    ):
        bind_servicers([ECHO_SERVICE], [Echo(), PlainEcho()])


def test_class_instead_of_instance() -> None:
    with pytest.raises(TypeError, match=r"got the class Echo, not an instance; pass Echo\(\)"):
        bind_servicers([ECHO_SERVICE], [Echo])


def test_generated_servicer_of_another_file() -> None:
    with pytest.raises(
        TypeError, match=r"implements lftest\.v1\.Echo, which is not among .*lftest\.v1\.Other"
    ):
        bind_servicers([OTHER_SERVICE], [Echo()])


def test_object_with_none_of_the_methods() -> None:
    with pytest.raises(
        TypeError, match=r"has none of the methods of lftest\.v1\.Echo \(Say, Expand"
    ):
        bind_servicers([ECHO_SERVICE], [object()])


def test_no_servicers() -> None:
    with pytest.raises(
        TypeError, match=r"no servicers given; expected servicers for lftest\.v1\.Echo"
    ):
        bind_servicers([ECHO_SERVICE], [])


async def test_plain_grpc_servicer_is_served(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    client = client_for(await start(PlainEcho()))
    call = client.say(StringValue(value="x"))
    assert (await call).value == "plain x"
    assert md(await call.trailing_metadata())[NODE_METADATA_KEY] == NODE
    # grpc's generated default (sync, raises NotImplementedError) -> UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in client.expand(StringValue(value="x"))]
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "Method not implemented!"
    assert md(info.value.trailing_metadata())[NODE_METADATA_KEY] == NODE


async def test_generated_base_defaults_are_unimplemented(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    client = client_for(await start(EchoServicer()))
    for call in (client.say(StringValue()), client.collect(iter([StringValue()]))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    for stream in (client.expand(StringValue()), client.chat(iter([StringValue()]))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [r async for r in stream]
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_two_services_on_one_server(
    start: StartServer, client_for: Callable[[Server], Client]
) -> None:
    server = await start(Echo(), PlainOther(), services=BOTH)
    client = client_for(server)
    assert (await client.say(StringValue(value="a"))).value == "hello a"
    ping = client.unary(f"/{OTHER_SERVICE.name}/Ping")
    assert (await ping(StringValue())).value == "pong"
    assert server.services == (ECHO_SERVICE.name, OTHER_SERVICE.name)

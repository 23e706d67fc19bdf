"""A servicer method named like the client method (``say_hello``) instead of the rpc is reported."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from greeter.v1 import greeter_localfirst as gen

from protoc_gen_localfirst.runtime.server.binding import bind_servicers, misnamed_handlers

LOGGER = "protoc_gen_localfirst.server"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


class SnakeCase(gen.GreeterServicer):
    async def say_hello(self, request: Any, context: Any) -> Any:
        return None


class Implemented(gen.GreeterServicer):
    async def SayHello(self, request: Any, context: Any) -> Any:
        return await self.say_hello(request)

    async def say_hello(self, request: Any) -> Any:  # a helper of the same name: fine
        return None

    def _who_am_i(self) -> str:  # private helpers are never candidates
        return "me"


def test_snake_case_method_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    bind_servicers(gen.SERVICES, [SnakeCase()])
    expected = (
        f"{__name__}.SnakeCase.say_hello is not served: servicer methods are named exactly"
        " like the rpc, so rename it to SayHello (rpc greeter.v1.Greeter/SayHello answers"
        " UNIMPLEMENTED until then)"
    )
    assert _warnings(caplog) == [expected]


def test_other_spellings_are_caught_too() -> None:
    class Camel(gen.GreeterServicer):
        def lotsOfReplies(self, request: Any, context: Any) -> Any:
            return iter(())

        async def Whoami(self, request: Any, context: Any) -> Any:
            return None

    assert misnamed_handlers(gen.GREETER_SERVICE, Camel()) == [
        ("Whoami", "WhoAmI"),
        ("lotsOfReplies", "LotsOfReplies"),
    ]


def test_implemented_rpc_with_a_same_named_helper_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    bind_servicers(gen.SERVICES, [Implemented()])
    assert _warnings(caplog) == []


def test_plain_servicer_with_only_snake_case_methods_is_refused_with_the_fix() -> None:
    class Plain:
        async def say_hello(self, request: Any, context: Any) -> Any:
            return None

        async def who_am_i(self, request: Any, context: Any) -> Any:
            return None

    with pytest.raises(TypeError) as raised:
        bind_servicers(gen.SERVICES, [Plain()])
    message = str(raised.value)
    assert "has none of the methods of greeter.v1.Greeter" in message
    assert message.endswith("; rename say_hello to SayHello; rename who_am_i to WhoAmI")


def test_plain_servicer_with_one_misnamed_method_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Plain:
        async def SayHello(self, request: Any, context: Any) -> Any:
            return None

        async def set_greeting(self, request: Any, context: Any) -> Any:
            return None

    caplog.set_level(logging.WARNING, LOGGER)
    bind_servicers(gen.SERVICES, [Plain()])
    (message,) = _warnings(caplog)
    assert ".Plain.set_greeting is not served" in message
    assert "rename it to SetGreeting" in message


def test_grpc_pb2_grpc_base_default_counts_as_not_implemented() -> None:
    def unimplemented(self: Any, request: Any, context: Any) -> Any:
        raise NotImplementedError("Method not implemented!")

    base = type("GreeterServicer", (), {"SayHello": unimplemented})
    base.__module__ = "greeter.v1.greeter_pb2_grpc"

    class Mine(base):  # type: ignore[misc, valid-type]
        async def say_hello(self, request: Any, context: Any) -> Any:
            return None

    assert misnamed_handlers(gen.GREETER_SERVICE, Mine()) == [("say_hello", "SayHello")]


def test_non_callable_attributes_are_ignored() -> None:
    class WithData(gen.GreeterServicer):
        say_hello = "a greeting template"

    assert misnamed_handlers(gen.GREETER_SERVICE, WithData()) == []

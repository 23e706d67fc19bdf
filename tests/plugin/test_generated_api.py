"""The committed generated modules: names, escaping, wiring to the method table, docs."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import warnings
from types import ModuleType
from typing import Any

import pytest

from protoc_gen_localfirst import runtime as lf

from . import conftest  # noqa: F401  (puts generated/ on sys.path)

MODULES = [
    "greeter.v1.greeter_localfirst",
    "billing.v1.billing_localfirst",
    "edge.keywords_localfirst",
    "edge.editions_localfirst",
    "edge.top_level_name_localfirst",
]


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _services(module: ModuleType) -> list[tuple[lf.ServiceInfo, type, type]]:
    """(table, async client, servicer) per service; the servicer is found by SERVICE."""
    found = []
    for table in module.SERVICES:
        servicers = [
            c
            for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, lf.Servicer) and c.SERVICE is table
        ]
        assert len(servicers) == 1, table.name
        servicer = servicers[0]
        stem = servicer.__name__.removesuffix("Servicer")
        found.append((table, getattr(module, f"{stem}Client"), servicer))
    return found


def _client_methods(cls: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(cls).items()
        if callable(value) and not name.startswith("__")
    }


class _Recorder:
    """Stands in for the runtime call helpers; remembers which MethodInfo was used."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, lf.MethodInfo[Any, Any]]] = []

    def install(self, client: object, *, is_async: bool) -> None:
        for helper in ("_unary_unary", "_unary_stream", "_stream_unary", "_stream_stream"):

            def fake(
                method: lf.MethodInfo[Any, Any],
                request: object,
                *,
                helper: str = helper,
                **kw: object,
            ) -> object:
                assert set(kw) == {"timeout", "metadata", "retry"}
                self.calls.append((helper, method))
                if is_async and helper in ("_unary_unary", "_stream_unary"):

                    async def done() -> str:
                        return "reply"

                    return done()
                return iter(["reply"])

            setattr(client, helper, fake)


def _call_every_method(cls: type, *, is_async: bool) -> list[tuple[str, lf.MethodInfo[Any, Any]]]:
    client = cls.__new__(cls)  # no channel: the helpers are replaced
    recorder = _Recorder()
    recorder.install(client, is_async=is_async)
    for name in _client_methods(cls):
        result = getattr(client, name)(object(), timeout=1.0)
        if inspect.iscoroutine(result):
            assert asyncio.run(result) == "reply"
    return recorder.calls


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("module_name", MODULES)
def test_every_client_method_calls_its_own_table_entry(module_name: str) -> None:
    module = _module(module_name)
    for table, client_cls, servicer_cls in _services(module):
        sync_cls = next(
            c
            for c in vars(module).values()
            if isinstance(c, type)
            and issubclass(c, lf.SyncClient)
            and c.__name__.rstrip("_").removesuffix("SyncClient")
            == client_cls.__name__.removesuffix("Client")
        )
        for cls, is_async in ((client_cls, True), (sync_cls, False)):
            calls = _call_every_method(cls, is_async=is_async)
            # Each rpc exactly once, through the helper matching its kind.
            assert sorted(m.name for _, m in calls) == sorted(m.name for m in table.methods)
            for helper, method in calls:
                assert helper == f"_{method.kind.value}"
                assert method in table.methods
        for method in table.methods:
            assert method.service == table.name
            assert callable(getattr(servicer_cls, method.handler_name))


def test_greeter_api() -> None:
    m = _module("greeter.v1.greeter_localfirst")
    assert m.__all__ == [
        "GREETER_SERVICE",
        "GreeterClient",
        "GreeterSyncClient",
        "GreeterServicer",
        "SERVICES",
        "serve",
        "start_server",
    ]
    assert m.SERVICES == (m.GREETER_SERVICE,)
    table = {method.name: method for method in m.GREETER_SERVICE.methods}
    assert list(table) == [
        "SayHello",
        "LotsOfReplies",
        "LotsOfGreetings",
        "BidiHello",
        "WhoAmI",
        "SetGreeting",
        "SayHelloV0",
    ]
    assert table["SayHello"].path == "/greeter.v1.Greeter/SayHello"
    assert [
        table[n].kind for n in ("SayHello", "LotsOfReplies", "LotsOfGreetings", "BidiHello")
    ] == [
        lf.MethodKind.UNARY_UNARY,
        lf.MethodKind.UNARY_STREAM,
        lf.MethodKind.STREAM_UNARY,
        lf.MethodKind.STREAM_STREAM,
    ]
    assert table["WhoAmI"].idempotency is lf.Idempotency.NO_SIDE_EFFECTS
    assert table["SetGreeting"].idempotency is lf.Idempotency.IDEMPOTENT
    assert table["SayHello"].idempotency is lf.Idempotency.IDEMPOTENCY_UNKNOWN
    assert [n for n, i in table.items() if i.deprecated] == ["SayHelloV0"]
    pb2 = importlib.import_module("greeter.v1.greeter_pb2")
    assert table["WhoAmI"].request_type is pb2.WhoAmIRequest
    assert table["WhoAmI"].response_type is pb2.HelloReply
    assert list(_client_methods(m.GreeterClient)) == [
        "say_hello",
        "lots_of_replies",
        "lots_of_greetings",
        "bidi_hello",
        "who_am_i",
        "set_greeting",
        "say_hello_v0",
    ]
    assert inspect.iscoroutinefunction(m.GreeterClient.say_hello)
    assert not inspect.iscoroutinefunction(m.GreeterClient.lots_of_replies)
    assert inspect.iscoroutinefunction(m.GreeterClient.lots_of_greetings)
    assert not inspect.iscoroutinefunction(m.GreeterSyncClient.say_hello)
    assert list(_client_methods(m.GreeterServicer)) == list(table)
    assert not inspect.isabstract(m.GreeterServicer)
    m.GreeterServicer()  # instantiable: unimplemented rpcs answer UNIMPLEMENTED
    params = inspect.signature(m.GreeterClient.say_hello).parameters
    assert [(p.name, p.kind.name) for p in params.values()] == [
        ("self", "POSITIONAL_OR_KEYWORD"),
        ("request", "POSITIONAL_OR_KEYWORD"),
        ("timeout", "KEYWORD_ONLY"),
        ("metadata", "KEYWORD_ONLY"),
        ("retry", "KEYWORD_ONLY"),
    ]
    assert "requests" in inspect.signature(m.GreeterClient.bidi_hello).parameters
    assert "request_iterator" in inspect.signature(m.GreeterServicer.BidiHello).parameters


def _greeter_clients() -> tuple[Any, Any]:
    m = _module("greeter.v1.greeter_localfirst")
    async_client = m.GreeterClient.__new__(m.GreeterClient)
    _Recorder().install(async_client, is_async=True)
    sync_client = m.GreeterSyncClient.__new__(m.GreeterSyncClient)
    _Recorder().install(sync_client, is_async=False)
    return async_client, sync_client


async def _call_deprecated(client: Any) -> object:
    return await client.say_hello_v0(object())


def test_deprecated_rpc_warns_at_the_callers_line() -> None:
    async_client, sync_client = _greeter_clients()
    for client in (async_client, sync_client):
        assert ".. deprecated::" in (type(client).say_hello_v0.__doc__ or "")
    # stacklevel=2 blames the line that calls the rpc, not generated code: for
    # the coroutine that is the awaiting function (_call_deprecated, this file).
    with pytest.warns(DeprecationWarning, match="SayHelloV0 is deprecated") as caught:
        asyncio.run(_call_deprecated(async_client))
    assert [w.filename for w in caught] == [__file__]
    with pytest.warns(DeprecationWarning, match="SayHelloV0 is deprecated") as caught:
        sync_client.say_hello_v0(object())
    assert [w.filename for w in caught] == [__file__]


def test_other_rpcs_do_not_warn() -> None:
    async_client, sync_client = _greeter_clients()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(async_client.say_hello(object()))
        sync_client.say_hello(object())


def test_keywords_and_collisions() -> None:
    m = _module("edge.keywords_localfirst")
    table = {method.name: method for method in m.KEYWORDS_SERVICE.methods}
    client = list(_client_methods(m.KeywordsClient))
    assert client == [
        "from_",
        "import_",
        "none_",
        "close_",
        "unary_unary",
        "rpc_unary_unary",
        "get_foo",
        "get_foo_",
        "get_http_status",
        "get2_fa",
        "service",
        "from__",
    ]
    assert list(_client_methods(m.KeywordsSyncClient)) == client
    assert list(_client_methods(m.KeywordsServicer)) == [
        "From",
        "Import",
        "None_",
        "Close",
        "UnaryUnary",
        "_UnaryUnary",
        "GetFoo",
        "Get_Foo",
        "GetHTTPStatus",
        "Get2FA",
        "SERVICE_",
        "From_",
    ]
    # The wire names stay as written in the proto.
    assert table["None"].path == "/edge.keywords.Keywords/None"
    assert table["None"].handler_name == "None_"
    assert table["SERVICE"].handler_name == "SERVICE_"
    assert m.KeywordsServicer.SERVICE is m.KEYWORDS_SERVICE  # not shadowed by rpc SERVICE
    assert table["From"].handler_name == "From"
    assert lf.AsyncClient.close is m.KeywordsClient.close  # rpc Close did not shadow it
    # Services named like runtime classes.
    assert issubclass(m.AsyncClientClient, lf.AsyncClient)
    assert m.ServiceInfoClient.__name__ == "ServiceInfoClient"
    assert m.SERVICE_INFO_SERVICE.name == "edge.keywords.ServiceInfo"
    # Greeter's sync client and GreeterSync's async client both wanted GreeterSyncClient:
    # the async client keeps the plain name, the sync client gets the escape.
    assert issubclass(m.GreeterSyncClient, lf.AsyncClient)
    assert m.GreeterSyncClient.hello is not None
    assert issubclass(m.GreeterSyncClient_, lf.SyncClient)
    assert hasattr(m.GreeterSyncClient_, "say_hello")
    # HTTPStatus and HttpStatus both wanted HTTP_STATUS_SERVICE.
    assert m.HTTP_STATUS_SERVICE.name == "edge.keywords.HTTPStatus"
    assert m.HTTP_STATUS_SERVICE_.name == "edge.keywords.HttpStatus"
    # Greeter.SayHello and GreeterSay.Hello both wanted _GREETER_SAY_HELLO.
    assert m._GREETER_SAY_HELLO.path == "/edge.keywords.Greeter/SayHello"
    assert m._GREETER_SAY_HELLO_.path == "/edge.keywords.GreeterSay/Hello"
    assert len(set(m.__all__)) == len(m.__all__)
    for name in m.__all__:
        assert hasattr(m, name)


def test_docstrings_keep_comments_escaped() -> None:
    m = _module("edge.keywords_localfirst")
    doc = inspect.getdoc(m.KeywordsClient) or ""
    assert doc.startswith(
        '"""Comment with quotes""" and a \\backslash\\, a \\x41 escape-lookalike,\n'
        'a "quoted word" and a trailing quote"\n'
    )
    assert inspect.getdoc(m.KeywordsClient.from_) == (
        "Python keyword: client method from_, servicer handler From."
    )
    assert inspect.getdoc(m.KeywordsClient.import_) == ("Call ``/edge.keywords.Keywords/Import``.")
    g = _module("greeter.v1.greeter_localfirst")
    assert (inspect.getdoc(g.GreeterClient) or "").startswith(
        "Greeter says hello from whichever replica answers.\n\nEvery reply names the node"
    )
    assert inspect.getdoc(g.GreeterServicer.SayHello) == "Greets one caller once."
    assert "UNIMPLEMENTED" in (inspect.getdoc(g.GreeterServicer) or "")
    assert inspect.getdoc(g.GreeterClient.who_am_i) == (
        "Reports which node and replica answered; reads nothing and changes\n"
        "nothing, so it is safe to retry on any error."
    )

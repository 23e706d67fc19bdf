"""Node announcement: every response says which node answered it.

A client that found its endpoints through plain DNS knows IPs but not nodes.
The server tells it: the node name goes into the **trailing** metadata of
every call, and into the **initial** metadata (headers) of every call whose
response is a stream, before its first message.

Why unary responses carry it in trailers only: grpc sends the headers, the
single message and the status of a unary response in one batch, one write.
Sending headers early (to put the node in them) would split that into two
writes, and a replica killed between them leaves the client with headers but
no status: a committed call (gRFC A6) that must not be retried, i.e. a failed
call during a crash that plain grpc would have avoided. Trailers arrive in
the same write as the response, so the client learns the node just as well.

How
---
``NodeAnnouncer`` is a ``grpc.aio.ServerInterceptor``. It wraps the async
behaviour of *every* handler on the server (ours, the health service, anything
added to ``Server.grpc_server`` later) and hands the behaviour an
``AnnouncingContext`` instead of grpc's own context. The wrapping context:

* puts the node into the trailing metadata as soon as the call starts, and
  merges it into whatever the handler later passes to
  ``set_trailing_metadata`` or ``abort(..., trailing_metadata=...)``;
* merges the node into the handler's own ``send_initial_metadata(...)`` call,
  so a handler that sends headers itself still works and both keys arrive;
* for streamed responses, sends the headers (with the node) when the first
  message is about to go out, or when the handler finishes with status OK.

Headers never go out before the handler produced a response: a client treats
"response headers received" as "call committed, do not retry", so a handler
that fails (abort, ``set_code``, exception) first still yields a trailers-only
response, which a client may retry elsewhere.

HTTP/3 advertisement (``alt-svc``)
----------------------------------
When the server also listens for HTTP/3 (``http3=True``), HTTP/2 responses
advertise it, ``h3=":PORT"`` (RFC 7838), without changing what goes out when:

* streamed responses: an ``alt-svc`` header, in the headers the announcer
  sends anyway (with the node) before the first message;
* every response: a ``localfirst-alt-svc`` trailer with the same value.

Unary responses get the trailer only. Putting ``alt-svc`` in their headers
would need the early ``send_initial_metadata`` this module avoids (see
above); an ``alt-svc`` *trailer* is meaningless to HTTP (RFC 7838 defines the
header field), hence the private name. The trade-off: a generic HTTP client
that made only unary calls never sees a standard ``alt-svc`` header; our own
client reads the trailer (it arrives in the same write as the response).
The HTTP/3 server sends neither (the client is already there).

Sync (thread-pool) handlers are left untouched: they never see the node.
Everything this package registers is async.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, NoReturn, cast

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.identity import DRAINING_KEY, NODE_METADATA_KEY, OVERLOADED_KEY
from protoc_gen_localfirst.runtime.loadreport import LOAD_REPORT_KEY
from protoc_gen_localfirst.runtime.server.load import CallLoad, ServerLoad, UncountedLoad
from protoc_gen_localfirst.runtime.wire.status import METHOD_NOT_FOUND, SHUTTING_DOWN

MetadataPairs = tuple[tuple[str, str | bytes], ...]
_Metadata = grpc.aio.Metadata | Iterable[tuple[str, str | bytes]]

ALT_SVC_HEADER = "alt-svc"
ALT_SVC_TRAILER = "localfirst-alt-svc"


def with_node(metadata: _Metadata | None, node: str) -> MetadataPairs:
    """``metadata`` as pairs, plus ``(NODE_METADATA_KEY, node)`` unless present."""
    pairs: MetadataPairs = tuple((key, value) for key, value in (metadata or ()))
    if any(key.lower() == NODE_METADATA_KEY for key, _ in pairs):
        return pairs
    return (*pairs, (NODE_METADATA_KEY, node))


class AnnouncingContext(grpc.aio.ServicerContext[Any, Any]):
    """A servicer context that adds the node to headers and trailers.

    Delegates everything to grpc's context; see the module docstring for what
    it changes. ``inner`` is grpc's own context.
    """

    def __init__(
        self,
        inner: grpc.aio.ServicerContext[Any, Any],
        node: str,
        alt_svc: str | None = None,
        load: CallLoad | None = None,
    ) -> None:
        self.inner = inner
        self.node = node
        self.alt_svc = alt_svc
        self.load = load
        self._headers_sent = False
        self._own_trailers: MetadataPairs = ()
        inner.set_trailing_metadata(self._trailers(()))

    def _trailers(self, metadata: _Metadata | None, *, report: bool = False) -> MetadataPairs:
        pairs = with_node(metadata, self.node)
        if self.alt_svc is not None and all(k.lower() != ALT_SVC_TRAILER for k, _ in pairs):
            pairs = (*pairs, (ALT_SVC_TRAILER, self.alt_svc))
        if report and self.load is not None:
            pairs = (*pairs, (LOAD_REPORT_KEY, self.load.report()))
        return pairs

    def finish(self) -> None:
        """The handler is done: final trailers, with the server's load as of now."""
        if self.load is not None and not self.inner.done():
            self.inner.set_trailing_metadata(self._trailers(self._own_trailers, report=True))

    def _headers(self, metadata: _Metadata | None) -> MetadataPairs:
        pairs = with_node(metadata, self.node)
        if self.alt_svc is None or any(k.lower() == ALT_SVC_HEADER for k, _ in pairs):
            return pairs
        return (*pairs, (ALT_SVC_HEADER, self.alt_svc))

    @property
    def headers_sent(self) -> bool:
        """Whether response headers went out through this context."""
        return self._headers_sent

    async def announce(self) -> None:
        """Send the response headers (with the node) unless already sent."""
        if not self._headers_sent:
            await self.send_initial_metadata(())

    async def announce_if_ok(self) -> None:
        """At the end of a handler: send headers if the call is still OK.

        A handler that set a non-OK code without aborting must stay
        trailers-only, so headers go out only for OK (or unset) codes.
        """
        if self._headers_sent or self.inner.done():
            return
        code = self.inner.code()
        if code is None or code == grpc.StatusCode.OK:
            await self.announce()

    # --- metadata: merged, never double-sent -------------------------------

    async def send_initial_metadata(self, initial_metadata: _Metadata) -> None:
        await self.inner.send_initial_metadata(self._headers(initial_metadata))
        self._headers_sent = True

    def set_trailing_metadata(self, trailing_metadata: _Metadata) -> None:
        self._own_trailers = tuple(trailing_metadata)
        self.inner.set_trailing_metadata(self._trailers(self._own_trailers))

    async def write(self, message: Any) -> None:
        await self.announce()
        await self.inner.write(message)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: _Metadata = (),
    ) -> NoReturn:
        pairs = tuple(trailing_metadata) or self._own_trailers
        # Abort's trailers replace those set before: send them all, and the load.
        await self.inner.abort(code, details, self._trailers(pairs, report=True))

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    # --- plain delegation ---------------------------------------------------

    async def read(self) -> Any:
        return await self.inner.read()

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        return self.inner.invocation_metadata()

    def set_code(self, code: grpc.StatusCode) -> None:
        self.inner.set_code(code)

    def set_details(self, details: str) -> None:
        self.inner.set_details(details)

    def set_compression(self, compression: grpc.Compression) -> None:
        self.inner.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self.inner.disable_next_message_compression()

    def peer(self) -> str:
        return self.inner.peer()

    def peer_identities(self) -> Iterable[bytes] | None:
        return self.inner.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self.inner.peer_identity_key()

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self.inner.auth_context()

    def time_remaining(self) -> float:
        return self.inner.time_remaining()

    def trailing_metadata(self) -> grpc.aio.Metadata:
        return self.inner.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self.inner.code()

    def details(self) -> str:
        return self.inner.details()

    def add_done_callback(self, callback: Any) -> None:
        self.inner.add_done_callback(callback)

    def cancelled(self) -> bool:
        return self.inner.cancelled()

    def done(self) -> bool:
        return self.inner.done()

    def __getattr__(self, name: str) -> Any:
        # Anything newer grpc versions add to their context.
        return getattr(self.inner, name)


_UnaryBehaviour = Callable[[Any, Any], Awaitable[Any]]
_StreamBehaviour = Callable[[Any, Any], Any]


def _announcing_unary(
    behaviour: _UnaryBehaviour,
    node: str,
    alt_svc: Callable[[], str | None],
    load: CallLoad | None,
) -> _UnaryBehaviour:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        size = _REQUEST_BYTES.get()
        if load is not None and not load.admit(size):
            await _refuse(context, node, load)
        started = time.monotonic()
        try:
            ctx = AnnouncingContext(context, node, alt_svc(), load)
            response = await behaviour(request, ctx)
            if not ctx.headers_sent and not context.done():
                code = context.code()
                if code is not None and code != grpc.StatusCode.OK:
                    # set_code(...) + return: grpc would send empty headers and an
                    # empty message before the status; abort keeps it trailers-only.
                    await ctx.abort(code, context.details() or "")
            # The node and the load go in the trailers, sent in one batch with the response.
            ctx.finish()
            return response
        finally:
            if load is not None:
                load.release(time.monotonic() - started, size)

    return unary


def _announcing_stream(
    behaviour: _StreamBehaviour,
    node: str,
    alt_svc: Callable[[], str | None],
    load: CallLoad | None,
) -> _StreamBehaviour:
    if inspect.iscoroutinefunction(behaviour):
        # reader/writer style: the handler calls context.write itself.
        async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            size = _REQUEST_BYTES.get()
            if load is not None and not load.admit(size):
                await _refuse(context, node, load)
            try:
                ctx = AnnouncingContext(context, node, alt_svc(), load)
                await behaviour(request, ctx)
                await ctx.announce_if_ok()
                ctx.finish()
            finally:
                if load is not None:
                    load.release(None, size)

        return writer

    async def generator(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        size = _REQUEST_BYTES.get()
        if load is not None and not load.admit(size):
            await _refuse(context, node, load)
        try:
            ctx = AnnouncingContext(context, node, alt_svc(), load)
            responses = behaviour(request, ctx)
            try:
                async for response in responses:
                    await ctx.announce()
                    yield response
            finally:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
            await ctx.announce_if_ok()
            ctx.finish()
        finally:
            if load is not None:
                load.release(None, size)

    return generator


_REQUEST_BYTES: ContextVar[int] = ContextVar("localfirst_request_bytes", default=0)
"""The size of the unary request of the call this task runs (0: streamed requests).

Set by the request deserializer, which grpc.aio (and the HTTP/3 server) call
in the call's own task just before its handler: the wrapper reads it to count
the bytes the call holds against ``max_buffered_bytes``."""


def _measuring(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def measured(data: bytes) -> Any:
        _REQUEST_BYTES.set(len(data))
        return data if deserializer is None else deserializer(data)

    return measured


async def _refuse(
    context: grpc.aio.ServicerContext[Any, Any], node: str, load: CallLoad
) -> NoReturn:
    """Admission control: answer UNAVAILABLE before the handler runs (trailers-only)."""
    trailers = ((OVERLOADED_KEY, "true"), (LOAD_REPORT_KEY, load.report()))
    await context.abort(
        grpc.StatusCode.UNAVAILABLE, load.overload_details(), with_node(trailers, node)
    )


def _is_async(behaviour: object) -> bool:
    return inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)


def _no_alt_svc() -> str | None:
    return None


def announcing_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    node: str,
    alt_svc: Callable[[], str | None] = _no_alt_svc,
    load: CallLoad | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its async behaviour wrapped to announce ``node``.

    ``alt_svc()`` is read per call: the ``alt-svc`` value to advertise (see
    the module docstring), or None. With ``load``, calls are counted (and
    refused at the limit, if it has one) and trailers carry the load report.
    """
    des, ser = handler.request_deserializer, handler.response_serializer
    if not handler.request_streaming:
        des = _measuring(des)
    if handler.request_streaming and handler.response_streaming:
        if _is_async(handler.stream_stream):
            return grpc.stream_stream_rpc_method_handler(
                _announcing_stream(
                    cast(_StreamBehaviour, handler.stream_stream), node, alt_svc, load
                ),
                des,
                ser,
            )
    elif handler.request_streaming:
        if _is_async(handler.stream_unary):
            return grpc.stream_unary_rpc_method_handler(
                _announcing_unary(cast(_UnaryBehaviour, handler.stream_unary), node, alt_svc, load),
                des,
                ser,
            )
    elif handler.response_streaming:
        if _is_async(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _announcing_stream(
                    cast(_StreamBehaviour, handler.unary_stream), node, alt_svc, load
                ),
                des,
                ser,
            )
    elif _is_async(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(
            _announcing_unary(cast(_UnaryBehaviour, handler.unary_unary), node, alt_svc, load),
            des,
            ser,
        )
    return handler


_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _status_handler(
    code: grpc.StatusCode, details: str, trailers: MetadataPairs
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that answers only ``code`` (trailers-only), for any call kind."""

    async def answer(request_iterator: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, details, trailers)

    # stream_stream so nothing is read first, whatever the client's call kind.
    return grpc.stream_stream_rpc_method_handler(answer)


def _overload_handler(node: str, load: CallLoad) -> grpc.RpcMethodHandler[Any, Any]:
    """Admission's refusal for any call kind, before the request is read."""

    async def answer(request_iterator: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await _refuse(context, node, load)

    return grpc.stream_stream_rpc_method_handler(answer)


class NodeAnnouncer(grpc.aio.ServerInterceptor):
    """Wraps every async handler so its responses name ``node``.

    Unknown methods get UNIMPLEMENTED ("Method not found!", as grpc says it)
    with the node in the trailers, instead of grpc's bare reply.
    """

    _CACHE_LIMIT = 4096

    def __init__(self, node: str, load: ServerLoad | None = None) -> None:
        self.node = node
        self.load = load or ServerLoad()
        """Calls in flight, admission control and load reports (shared by HTTP/2 and HTTP/3)."""
        self.alt_svc: str | None = None
        """``h3=":PORT"`` when the server also speaks HTTP/3 (set before it starts)."""
        self.refusing = False
        """Set while the server stops: new calls get UNAVAILABLE, health still answers."""
        self._cache: dict[tuple[int, bool], tuple[object, grpc.RpcMethodHandler[Any, Any]]] = {}
        trailers = with_node((), node)
        self._not_found = _status_handler(grpc.StatusCode.UNIMPLEMENTED, METHOD_NOT_FOUND, trailers)
        self._refused = _status_handler(
            grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN, (*trailers, (DRAINING_KEY, "true"))
        )
        self._overloaded = _overload_handler(node, self.load)

    def _get_alt_svc(self) -> str | None:
        return self.alt_svc

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        health = handler_call_details.method.startswith(_HEALTH_PREFIX)
        if self.refusing and not health:
            return self._refused
        handler = await continuation(handler_call_details)
        if handler is None:
            return self._not_found
        # Generic handlers return the same handler object for every call of a
        # method, so wrap each one once.
        # Health checks carry the load report but are neither counted nor refused.
        key = (id(handler), health)
        cached = self._cache.get(key)
        if cached is not None and cached[0] is handler:
            return self._admitting(cached[1], handler, health)
        load = UncountedLoad(self.load) if health else self.load
        wrapped = announcing_handler(handler, self.node, self._get_alt_svc, load)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (handler, wrapped)
        return self._admitting(wrapped, handler, health)

    def _admitting(
        self,
        wrapped: grpc.RpcMethodHandler[Any, Any],
        handler: grpc.RpcMethodHandler[Any, Any],
        health: bool,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``wrapped``, or the overload refusal if a counted call would be refused now.

        Interceptors run before grpc (and the HTTP/3 server) read the request:
        refusing here costs no request body, which the wrapper's own check
        (after grpc read a unary request whole) cannot avoid. The wrapper
        still checks (``admit``), for calls racing past this one.
        """
        if health or wrapped is handler or not self.load.full():
            return wrapped
        return self._overloaded

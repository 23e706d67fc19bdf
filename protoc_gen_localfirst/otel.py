"""OpenTelemetry metrics and traces for localfirst clients and servers (the ``otel`` extra).

Client: pass an ``OpenTelemetryObserver`` to any client::

    from protoc_gen_localfirst.otel import OpenTelemetryObserver

    observer = OpenTelemetryObserver()          # the global meter and tracer providers
    client = GreeterClient(target, observers=[observer])

Server: its interceptor, on both transports (the HTTP/3 server runs the same
interceptor chain as grpc.aio)::

    await serve(servicer, interceptors=[observer.server_interceptor()])

Metrics follow gRFC A66 (names, units, attributes, bucket boundaries) and
A96 (retries); ``localfirst.*`` metrics add what plain gRPC does not have
(locality tier, failovers, hedges, spills, ejections). Spans: one CLIENT span
per call named ``package.Service/Method``, a child ``Attempt.package.Service/Method``
per attempt, whose W3C ``traceparent``/``tracestate`` go out in the attempt's
request metadata; the server continues that trace in a SERVER span. The
whole list is in ``docs/observability.md``.

This is the only module of the package that imports ``opentelemetry``
(enforced by import-linter): the runtime works without it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, cast

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from protoc_gen_localfirst import __version__
from protoc_gen_localfirst.runtime.client.observers import (
    AttemptFinished,
    AttemptInfo,
    BaseObserver,
    CallFinished,
    CallInfo,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint

__all__ = [
    "COUNT_BUCKETS",
    "LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "OpenTelemetryObserver",
    "OpenTelemetryServerInterceptor",
]

INSTRUMENTATION_NAME = "protoc_gen_localfirst"

LATENCY_BUCKETS: tuple[float, ...] = (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004,
    0.005, 0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08,
    0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100,
)  # fmt: skip
"""gRFC A66's latency buckets, in seconds."""

SIZE_BUCKETS: tuple[float, ...] = (
    0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    268435456, 1073741824, 4294967296,
)  # fmt: skip
"""gRFC A66's size buckets, in bytes."""

COUNT_BUCKETS: tuple[float, ...] = (
    0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
)  # fmt: skip
"""gRFC A66's count buckets (A96's retry histograms use them)."""

# Attribute names.
METHOD = "grpc.method"
STATUS = "grpc.status"
TARGET = "grpc.target"
LOCALITY = "localfirst.locality"
OUTCOME = "localfirst.outcome"
SPILL_REASON = "localfirst.spill.reason"


def _status_name(code: grpc.StatusCode) -> str:
    return code.name


def _status_number(code: grpc.StatusCode) -> int:
    value = code.value[0]
    return int(value) if isinstance(value, int) else 2


def _rpc_attributes(method: str) -> dict[str, str]:
    """OpenTelemetry's RPC semantic conventions: ``rpc.system``, ``rpc.service``, ``rpc.method``."""
    service, _, name = method.partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _endpoint_attributes(endpoint: Endpoint) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "server.address": endpoint.host,
        "server.port": endpoint.port,
        "localfirst.endpoint": endpoint.address,
    }
    if endpoint.node:
        attributes["localfirst.node"] = endpoint.node
    if endpoint.zone:
        attributes["localfirst.zone"] = endpoint.zone
    return attributes


class OpenTelemetryObserver(BaseObserver):
    """A client observer that records gRFC A66 metrics and call/attempt spans.

    ``meter_provider``/``tracer_provider``: None uses OpenTelemetry's global
    providers. ``propagator`` writes the trace context into each attempt's
    request metadata (default: W3C Trace Context, ``traceparent`` and
    ``tracestate``). One observer may serve several clients and servers.
    """

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.propagator = propagator or TraceContextTextMapPropagator()
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(
            INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        self._create_grpc_instruments(meter)
        self._create_localfirst_instruments(meter)
        self._calls: dict[CallInfo, trace.Span] = {}
        self._attempt_spans: dict[AttemptInfo, trace.Span] = {}
        self._server: OpenTelemetryServerInterceptor | None = None
        self._lock = threading.Lock()

    def _create_grpc_instruments(self, meter: metrics.Meter) -> None:
        """gRFC A66/A96's client instruments."""
        self._attempt_started = meter.create_counter(
            "grpc.client.attempt.started", "{attempt}", "Number of client call attempts started."
        )
        self._attempt_duration = meter.create_histogram(
            "grpc.client.attempt.duration",
            "s",
            "End-to-end time taken to complete a client call attempt.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._call_duration = meter.create_histogram(
            "grpc.client.call.duration",
            "s",
            "Time taken by the client to complete a call, all attempts and waits included.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._retries = meter.create_histogram(
            "grpc.client.call.retries",
            "{retry}",
            "Retry and hedging attempts of a call, the first and transparent retries excluded.",
            explicit_bucket_boundaries_advisory=COUNT_BUCKETS,
        )
        self._transparent = meter.create_histogram(
            "grpc.client.call.transparent_retries",
            "{transparent_retry}",
            "Transparent retries of a call (attempts after one that never left the client).",
            explicit_bucket_boundaries_advisory=COUNT_BUCKETS,
        )
        self._retry_delay = meter.create_histogram(
            "grpc.client.call.retry_delay",
            "s",
            "Total time of delay while there is no active attempt during the client call.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )

    def _create_localfirst_instruments(self, meter: metrics.Meter) -> None:
        """Ours: locality, failover, hedging, spill, throttling, ejection counts."""
        self._attempts = meter.create_counter(
            "localfirst.client.attempts",
            "{attempt}",
            "Client attempts ended, by locality tier of the endpoint and outcome.",
        )
        self._hedges = meter.create_counter(
            "localfirst.client.hedges", "{attempt}", "Hedged attempts sent."
        )
        self._failovers = meter.create_counter(
            "localfirst.client.failovers",
            "{attempt}",
            "Attempts sent to another endpoint than the failed attempt before them.",
        )
        self._spills = meter.create_counter(
            "localfirst.client.spills",
            "{call}",
            "Calls (full, slow) or attempts (refused) sent past the caller's node because it is busy.",
        )
        self._throttled = meter.create_counter(
            "localfirst.client.throttled",
            "{attempt}",
            "Retries or hedges not sent: the retry token bucket is low.",
        )
        self._ejections = meter.create_counter(
            "localfirst.client.ejections",
            "{ejection}",
            "Endpoints ejected (avoided for a while) after repeated failures.",
        )

    def server_interceptor(self) -> OpenTelemetryServerInterceptor:
        """The server side, with this observer's providers (one instance, reused)."""
        with self._lock:
            if self._server is None:
                self._server = OpenTelemetryServerInterceptor(
                    self.meter_provider, self.tracer_provider, propagator=self.propagator
                )
            return self._server

    # -- calls ------------------------------------------------------------------------

    def on_call_started(self, call: CallInfo) -> None:
        attributes: dict[str, Any] = {**_rpc_attributes(call.method), TARGET: call.target}
        attributes["localfirst.transport"] = call.transport
        self._calls[call] = self.tracer.start_span(
            call.method, kind=SpanKind.CLIENT, attributes=attributes
        )

    def on_call_finished(self, event: CallFinished) -> None:
        call = event.call
        attributes = {METHOD: call.method, TARGET: call.target}
        self._call_duration.record(event.latency, {**attributes, STATUS: event.code.name})
        self._retries.record(event.retries, attributes)
        self._transparent.record(event.transparent_retries, attributes)
        self._retry_delay.record(event.retry_delay, attributes)
        if event.hedges:
            self._hedges.add(event.hedges, attributes)
        if event.failovers:
            self._failovers.add(event.failovers, attributes)
        if event.spill is not None:
            self._spills.add(1, {**attributes, SPILL_REASON: event.spill})
        span = self._calls.pop(call, None)
        if span is None:
            return
        span.set_attribute("rpc.grpc.status_code", _status_number(event.code))
        span.set_attribute(STATUS, event.code.name)
        span.set_attribute("localfirst.attempts", event.attempts)
        span.set_attribute("localfirst.retries", event.retries)
        span.set_attribute("localfirst.hedges", event.hedges)
        span.set_attribute("localfirst.failovers", event.failovers)
        if event.spill is not None:
            span.set_attribute(SPILL_REASON, event.spill)
        if event.endpoint is not None:
            span.set_attribute("localfirst.endpoint", event.endpoint.address)
        if event.locality is not None:
            span.set_attribute(LOCALITY, event.locality)
        if event.code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, event.code.name))
        span.end()

    # -- attempts ---------------------------------------------------------------------

    def on_attempt_started(self, attempt: AttemptInfo) -> None:
        call = attempt.call
        self._attempt_started.add(1, {METHOD: call.method, TARGET: call.target})
        parent = self._calls.get(call)
        parent_context = None if parent is None else trace.set_span_in_context(parent)
        attributes: dict[str, Any] = {
            **_rpc_attributes(call.method),
            **_endpoint_attributes(attempt.endpoint),
            LOCALITY: attempt.locality,
            "localfirst.transport": call.transport,
            "localfirst.attempt": attempt.number,
            "localfirst.hedged": attempt.hedged,
        }
        span = self.tracer.start_span(
            f"Attempt.{call.method}",
            context=parent_context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        self._attempt_spans[attempt] = span
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            attempt.add_metadata(key.lower(), value)

    def on_attempt_finished(self, event: AttemptFinished) -> None:
        attempt = event.attempt
        call = attempt.call
        attributes = {METHOD: call.method, TARGET: call.target, STATUS: event.code.name}
        self._attempt_duration.record(event.latency, attributes)
        self._attempts.add(1, {**attributes, LOCALITY: attempt.locality, OUTCOME: event.outcome})
        if event.outcome == "refused":
            self._spills.add(1, {METHOD: call.method, TARGET: call.target, SPILL_REASON: "refused"})
        span = self._attempt_spans.pop(attempt, None)
        if span is None:
            return
        span.set_attribute(OUTCOME, event.outcome)
        span.set_attribute("rpc.grpc.status_code", _status_number(event.code))
        span.set_attribute(STATUS, event.code.name)
        if event.node is not None:
            span.set_attribute("localfirst.node", event.node)
        if event.code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, f"{event.code.name} ({event.outcome})"))
        span.end()

    # -- the rest -----------------------------------------------------------------------

    def on_throttled(self, method: str) -> None:
        self._throttled.add(1, {METHOD: method.lstrip("/")})

    def on_ejection(self, endpoint: Endpoint, duration: float) -> None:
        attributes = {"localfirst.node": endpoint.node} if endpoint.node else {}
        self._ejections.add(1, attributes)


# -- server ---------------------------------------------------------------------------


class _Sizes:
    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0


_SIZES: ContextVar[_Sizes | None] = ContextVar("localfirst_otel_sizes", default=None)
"""The message bytes of the call this task serves. grpc.aio and our HTTP/3 server run
each call in its own task, and call (de)serializers in it."""


def _call_sizes() -> _Sizes:
    sizes = _SIZES.get()
    if sizes is None:
        sizes = _Sizes()
        _SIZES.set(sizes)
    return sizes


def _counting_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        _call_sizes().received += len(data)
        return data if deserializer is None else deserializer(data)

    return deserialize


def _counting_serializer(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    def serialize(message: Any) -> bytes:
        data = message if serializer is None else serializer(message)
        _call_sizes().sent += len(data)
        return cast(bytes, data)

    return serialize


_UnaryBehaviour = Callable[[Any, Any], Awaitable[Any]]


class OpenTelemetryServerInterceptor(grpc.aio.ServerInterceptor):
    """Server metrics (gRFC A66) and SERVER spans continuing the caller's trace.

    A ``grpc.aio.ServerInterceptor``: pass it in ``serve(..., interceptors=[...])``
    / ``start_server``; it runs on HTTP/2 and HTTP/3 alike. Async handlers only
    (everything generated is async); sync handlers are served unobserved.
    Calls the server refuses before any handler runs (unknown method, admission
    control, shutting down) are not seen.
    """

    _CACHE_LIMIT = 4096

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.propagator = propagator or TraceContextTextMapPropagator()
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(
            INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        self._started = meter.create_counter(
            "grpc.server.call.started", "{call}", "Number of server calls started."
        )
        self._duration = meter.create_histogram(
            "grpc.server.call.duration",
            "s",
            "End-to-end time taken to complete a call from the server's perspective.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._sent = meter.create_histogram(
            "grpc.server.call.sent_total_compressed_message_size",
            "By",
            "Total bytes of the response messages of a call (uncompressed: not compressed).",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )
        self._received = meter.create_histogram(
            "grpc.server.call.rcvd_total_compressed_message_size",
            "By",
            "Total bytes of the request messages of a call.",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )
        self._cache: dict[int, tuple[object, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        cached = self._cache.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        method = handler_call_details.method.lstrip("/")
        wrapped = self._wrap(handler, method)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        des = _counting_deserializer(handler.request_deserializer)
        ser = _counting_serializer(handler.response_serializer)
        if handler.request_streaming and handler.response_streaming:
            behaviour: Any = handler.stream_stream
            factory: Any = grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behaviour, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behaviour, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behaviour, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        if inspect.isasyncgenfunction(behaviour):
            observed: Any = self._generator(behaviour, method)
        elif inspect.iscoroutinefunction(behaviour):
            observed = self._coroutine(behaviour, method)
        else:
            return handler  # a sync (thread-pool) handler: left alone
        return cast("grpc.RpcMethodHandler[Any, Any]", factory(observed, des, ser))

    # -- one call ---------------------------------------------------------------------

    def _start(self, method: str, context: Any) -> tuple[trace.Span, object, float]:
        carrier: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                carrier[key] = value
        parent = self.propagator.extract(carrier)
        span = self.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=_rpc_attributes(method)
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._started.add(1, {METHOD: method})
        _call_sizes()  # from here on this call's (or the unary request's, already counted)
        return span, token, time.monotonic()

    def _end(
        self,
        method: str,
        span: trace.Span,
        token: object,
        started: float,
        code: grpc.StatusCode,
    ) -> None:
        self._duration.record(time.monotonic() - started, {METHOD: method, STATUS: code.name})
        sizes = _SIZES.get()
        if sizes is not None:
            self._sent.record(sizes.sent, {METHOD: method, STATUS: code.name})
            self._received.record(sizes.received, {METHOD: method, STATUS: code.name})
        span.set_attribute("rpc.grpc.status_code", _status_number(code))
        span.set_attribute(STATUS, code.name)
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def _coroutine(self, behaviour: _UnaryBehaviour, method: str) -> _UnaryBehaviour:
        async def observed(request: Any, context: Any) -> Any:
            span, token, started = self._start(method, context)
            code = grpc.StatusCode.UNKNOWN
            try:
                result = await behaviour(request, context)
                code = _final_code(context)
                return result
            except grpc.aio.AbortError:
                code = _final_code(context, grpc.StatusCode.UNKNOWN)
                raise
            except BaseException as error:
                code = _code_for(error)
                raise
            finally:
                self._end(method, span, token, started, code)

        return observed

    def _generator(
        self, behaviour: Callable[[Any, Any], AsyncIterator[Any]], method: str
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def observed(request: Any, context: Any) -> AsyncIterator[Any]:
            span, token, started = self._start(method, context)
            code = grpc.StatusCode.UNKNOWN
            responses = behaviour(request, context)
            try:
                async for response in responses:
                    yield response
                code = _final_code(context)
            except grpc.aio.AbortError:
                code = _final_code(context, grpc.StatusCode.UNKNOWN)
                raise
            except BaseException as error:
                code = _code_for(error)
                raise
            finally:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
                self._end(method, span, token, started, code)

        return observed


def _final_code(context: Any, default: grpc.StatusCode = grpc.StatusCode.OK) -> grpc.StatusCode:
    """The status the handler set (``set_code``/``abort``), else ``default``."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio's context may answer the cygrpc number
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status
    return default


def _code_for(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN

"""Server bootstrap: serve servicers from a method table over HTTP/2 (grpc.aio).

Generated modules call ``bind_servicers`` to pair servicer objects with the
services of their proto file, then ``serve`` (run until SIGTERM/SIGINT, then
drain) or ``start_server`` (start and hand back a ``Server``).

Handlers
--------
Servicer methods are grpc.aio style and run on the event loop:

* unary response (unary-unary, stream-unary): ``async def M(self, request,
  context) -> Response``; for client streaming ``request`` is an async
  iterator of requests.
* streaming response (unary-stream, stream-stream): an async generator
  (``async def M(...): yield ...``), or a plain ``def`` returning an async
  iterator (what generated stubs do), or an ``async def`` that writes with
  ``await context.write(...)`` and returns ``None``.

A plain (sync) ``def`` that returns a message also works but runs on the
event loop, so it must not block. ``NotImplementedError`` from a handler
(what grpc's generated ``_pb2_grpc`` base methods raise) becomes
UNIMPLEMENTED; a servicer without the method attribute at all also answers
UNIMPLEMENTED.

Every response carries this server's node name in its metadata; see
``server_announce`` for how and why. The standard ``grpc.health.v1.Health``
service is always served: ``""`` and every served service are SERVING from
start until ``drain``/``stop``.

HTTP/3
------
With ``http3=True`` (and ``certfile``/``keyfile``) the same bindings, health
service and interceptors are also served over QUIC + HTTP/3 on UDP, on the
same port number as the TCP listener (``h3_server``). HTTP/2 responses then
advertise it (``alt-svc`` on streamed responses, a ``localfirst-alt-svc``
trailer on all; see ``server_announce``). Drain and stop cover both: HTTP/3
connections get GOAWAY when stopping begins, in-flight calls get the same
grace, then the connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypedDict, Unpack

import grpc
import grpc.aio

# grpcio-health-checking ships no type hints (and typeshed has no stubs for it).
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import (
    HealthServicer as _AioHealthServicer,
)

from protoc_gen_localfirst.runtime.http3.server import (
    QUIC_LIBRARIES,
    Dispatcher,
    H3Server,
    HandlerCollector,
    QuicLibrary,
    UdpPortTaken,
)
from protoc_gen_localfirst.runtime.identity import own_node
from protoc_gen_localfirst.runtime.server.announce import NodeAnnouncer
from protoc_gen_localfirst.runtime.wire.framing import DEFAULT_MAX_MESSAGE_SIZE
from protoc_gen_localfirst.schema import MethodInfo, MethodKind, ServiceInfo

__all__ = [
    "BindError",
    "Binding",
    "ServeOptions",
    "Server",
    "Servicer",
    "ServicerContext",
    "abort_unimplemented",
    "bind_servicers",
    "serve",
    "start_server",
    "unimplemented_stream",
]

_LOG = logging.getLogger("protoc_gen_localfirst.server")

ServicerContext = grpc.aio.ServicerContext

NOT_IMPLEMENTED = "Method not implemented!"

DEFAULT_HOST = "[::]"
DEFAULT_PORT = 50051
DEFAULT_DRAIN_DELAY = 5.0
DEFAULT_GRACE = 10.0
DEFAULT_MAX_CONNECTION_AGE: float | None = 300.0
DEFAULT_MAX_CONNECTION_AGE_GRACE = 30.0


class ServeOptions(TypedDict, total=False):
    """Keyword options of ``serve``/``start_server``; every key is optional.

    host: address to listen on, default ``"[::]"`` (all interfaces, v4 and v6).
        ``"0.0.0.0"``, ``"127.0.0.2"``, ``"::1"`` and names work too.
    port: TCP port, default 50051; 0 picks a free one (see ``Server.port``).
    node: node name to announce; default ``$NODE_NAME``, else the host name.
    drain_delay: seconds between health NOT_SERVING and stopping, default 5.0,
        so load balancers and clients notice before connections close.
    grace: seconds in-flight calls get when stopping, default 10.0.
    max_connection_age: seconds before the server asks a client connection to
        go away (GOAWAY), default 300.0, None = never (gRFC A9). grpc core
        multiplies it by a random factor in [0.9, 1.1] per connection itself.
    max_connection_age_grace: seconds calls on such a connection may still
        run before it is closed, default 30.0.
    max_message_size: bytes, for both received and sent messages; default 4 MiB.
    server_credentials: TLS credentials (``grpc.ssl_server_credentials``);
        None (default) serves plaintext.
    handle_signals: ``serve`` only: drain on SIGTERM/SIGINT; default True.
    interceptors: extra ``grpc.aio.ServerInterceptor``s, run after the
        node announcer (so they see the announcing context); on HTTP/3 too.
    http3: also serve HTTP/3 (QUIC, UDP) on the same port number; default
        False. Needs ``certfile`` and ``keyfile`` (QUIC always uses TLS).
    certfile: PEM certificate chain for HTTP/3 (leaf first).
    keyfile: PEM private key for HTTP/3.
    quic_library: ``"qh3"`` (default) or ``"aioquic"``: the QUIC stack under
        the HTTP/3 server (same API; benchmarks compare them).
    """

    host: str
    port: int
    node: str | None
    drain_delay: float
    grace: float
    max_connection_age: float | None
    max_connection_age_grace: float
    max_message_size: int
    server_credentials: grpc.ServerCredentials | None
    handle_signals: bool
    interceptors: Sequence[grpc.aio.ServerInterceptor]
    http3: bool
    certfile: str | None
    keyfile: str | None
    quic_library: QuicLibrary


class Servicer:
    """Base of generated servicer classes; ``SERVICE`` names their service."""

    SERVICE: ClassVar[ServiceInfo]


@dataclass(frozen=True)
class Binding:
    """One servicer object serving one service."""

    service: ServiceInfo
    servicer: object


class BindError(OSError):
    """The server could not listen on the address it was given."""


# ---------------------------------------------------------------------------
# Pairing servicers with services


def _short_name(service: ServiceInfo) -> str:
    return service.name.rpartition(".")[2]


def _describe(servicer: object) -> str:
    cls = type(servicer)
    return f"{cls.__module__}.{cls.__qualname__}"


def _service_for(services: Sequence[ServiceInfo], servicer: object) -> ServiceInfo:
    names = ", ".join(s.name for s in services)
    if isinstance(servicer, type):
        raise TypeError(
            f"got the class {servicer.__qualname__}, not an instance; "
            f"pass {servicer.__qualname__}()"
        )
    declared = getattr(type(servicer), "SERVICE", None)
    if isinstance(declared, ServiceInfo):
        for service in services:
            if service.name == declared.name:
                return service
        raise TypeError(
            f"{_describe(servicer)} implements {declared.name}, which is not "
            f"among the services served here ({names})"
        )
    if len(services) == 1:
        (service,) = services
        handlers = [m.handler_name for m in service.methods]
        if handlers and not any(hasattr(servicer, h) for h in handlers):
            raise TypeError(
                f"{_describe(servicer)} has none of the methods of {service.name} "
                f"({', '.join(handlers)})"
            )
        return service
    for cls in type(servicer).__mro__:
        for service in services:
            if cls.__name__ == f"{_short_name(service)}Servicer":
                return service
    bases = ", ".join(f"{_short_name(s)}Servicer" for s in services)
    raise TypeError(
        f"cannot tell which service {_describe(servicer)} implements: it could be "
        f"any of {names}; subclass one of {bases}"
    )


def bind_servicers(services: Sequence[ServiceInfo], servicers: Sequence[object]) -> list[Binding]:
    """Pair each servicer with the one of ``services`` it implements.

    Rules, in order: a subclass of a generated servicer (class attribute
    ``SERVICE``) serves that service; with a single service in ``services``
    any servicer serves it (so a plain ``_pb2_grpc`` servicer works); else a
    class named ``<Service>Servicer`` in the servicer's MRO decides (grpc's
    naming). Anything else, or two servicers for one service, is a
    ``TypeError`` that says what was expected.
    """
    if not services:
        raise TypeError("no services to bind servicers to")
    if not servicers:
        names = ", ".join(s.name for s in services)
        raise TypeError(f"no servicers given; expected servicers for {names}")
    bindings: dict[str, Binding] = {}
    for servicer in servicers:
        service = _service_for(services, servicer)
        previous = bindings.get(service.name)
        if previous is not None:
            raise TypeError(
                f"two servicers for {service.name}: {_describe(previous.servicer)} "
                f"and {_describe(servicer)}"
            )
        bindings[service.name] = Binding(service, servicer)
    return list(bindings.values())


# ---------------------------------------------------------------------------
# Registration from the method table


async def abort_unimplemented(context: ServicerContext[Any, Any]) -> NoReturn:
    """Finish the call with UNIMPLEMENTED, as grpc's generated stubs do."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_IMPLEMENTED)


async def unimplemented_stream(context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
    """An async iterator that aborts the call with UNIMPLEMENTED when iterated."""
    await abort_unimplemented(context)
    yield  # pragma: no cover - makes this an async generator


async def _abort_not_implemented(
    context: ServicerContext[Any, Any], error: NotImplementedError
) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(error) or NOT_IMPLEMENTED)


def _unary_behaviour(impl: Callable[..., Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: ServicerContext[Any, Any]) -> Any:
        try:
            result = impl(request, context)
            if inspect.isawaitable(result):
                result = await result
        except NotImplementedError as error:
            await _abort_not_implemented(context, error)
        return result

    return unary


def _stream_behaviour(impl: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            result = impl(request, context)
            if inspect.isawaitable(result):
                result = await result  # None from a context.write style handler
            if result is None:
                return
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            else:
                for response in result:
                    yield response
        except NotImplementedError as error:
            await _abort_not_implemented(context, error)

    return stream


async def _unimplemented_unary(request: Any, context: ServicerContext[Any, Any]) -> NoReturn:
    await abort_unimplemented(context)


def _unimplemented_streaming(request: Any, context: ServicerContext[Any, Any]) -> Any:
    return unimplemented_stream(context)


_HANDLER_FACTORIES: dict[MethodKind, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    MethodKind.UNARY_UNARY: grpc.unary_unary_rpc_method_handler,
    MethodKind.UNARY_STREAM: grpc.unary_stream_rpc_method_handler,
    MethodKind.STREAM_UNARY: grpc.stream_unary_rpc_method_handler,
    MethodKind.STREAM_STREAM: grpc.stream_stream_rpc_method_handler,
}


def method_handler(
    method: MethodInfo[Any, Any], servicer: object
) -> grpc.RpcMethodHandler[Any, Any]:
    """The grpc handler for one rpc of ``servicer`` (UNIMPLEMENTED if it lacks it)."""
    impl = getattr(servicer, method.handler_name, None)
    if method.kind.server_streaming:
        behaviour = _stream_behaviour(impl or _unimplemented_streaming)
    else:
        behaviour = _unary_behaviour(impl or _unimplemented_unary)
    return _HANDLER_FACTORIES[method.kind](
        behaviour,
        request_deserializer=method.deserialize_request,
        response_serializer=method.serialize_response,
    )


def generic_handler(binding: Binding) -> grpc.GenericRpcHandler:
    """A grpc generic handler serving ``binding`` from its method table."""
    handlers = {m.name: method_handler(m, binding.servicer) for m in binding.service.methods}
    return grpc.method_handlers_generic_handler(binding.service.name, handlers)


# ---------------------------------------------------------------------------
# Health


class HealthServicer(_AioHealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer whose Watch streams end on ``close_watches``.

    Without that, every open Watch stream (grpc client-side health checking
    keeps one per connection) would hold ``stop(grace)`` for the whole grace.
    The stream sends NOT_SERVING first, then ends with OK.
    """

    def __init__(self) -> None:
        super().__init__()
        self._closing = asyncio.Event()

    def close_watches(self) -> None:
        self._closing.set()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({watch, closing}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()
        finally:
            for task in (watch, closing):
                task.cancel()
            await asyncio.gather(watch, closing, return_exceptions=True)


# ---------------------------------------------------------------------------
# Server


def _format_address(host: str, port: int) -> str:
    if host.startswith("["):
        return f"{host}:{port}"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _bind_reason(host: str, port: int) -> str:
    """Why binding probably failed, found by trying a plain socket there."""
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        return f"cannot resolve {bare!r}: {error}"
    for family, type_, proto, _, sockaddr in infos:
        with socket.socket(family, type_, proto) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return "address already in use"
                if error.errno == errno.EADDRNOTAVAIL:
                    return "address not available on this machine"
                return error.strerror or str(error)
    return "grpc could not bind (set GRPC_VERBOSITY=debug for details)"


_KNOWN_OPTIONS = frozenset(ServeOptions.__annotations__)


def _check_options(options: ServeOptions) -> None:
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown server option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN_OPTIONS))}"
        )
    for key in ("drain_delay", "grace", "max_connection_age_grace"):
        value = options.get(key)
        if value is not None and value < 0:  # type: ignore[operator]
            raise ValueError(f"{key} must be >= 0, got {value!r}")
    age = options.get("max_connection_age")
    if age is not None and age <= 0:
        raise ValueError(f"max_connection_age must be > 0 or None, got {age!r}")
    size = options.get("max_message_size")
    if size is not None and size <= 0:
        raise ValueError(f"max_message_size must be > 0, got {size!r}")
    port = options.get("port")
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port!r}")
    library = options.get("quic_library", "qh3")
    if library not in QUIC_LIBRARIES:
        raise ValueError(
            f"quic_library must be one of {', '.join(QUIC_LIBRARIES)}, got {library!r}"
        )
    if options.get("http3", False):
        missing = [k for k in ("certfile", "keyfile") if not options.get(k)]
        if missing:
            raise ValueError(
                f"http3=True needs {' and '.join(missing)}: QUIC always uses TLS "
                "(a certificate chain and its private key, PEM files)"
            )
        for path, key in (
            (options.get("certfile"), "certfile"),
            (options.get("keyfile"), "keyfile"),
        ):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{key} {path!r} is not a readable file")
    elif options.get("certfile") or options.get("keyfile"):
        raise ValueError("certfile/keyfile are for HTTP/3; pass http3=True too")


def _grpc_options(options: ServeOptions) -> list[tuple[str, Any]]:
    size = options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    result: list[tuple[str, Any]] = [
        # grpc sets SO_REUSEPORT by default, so a second server on a busy port
        # "binds" and silently takes half the connections. Fail loudly instead.
        ("grpc.so_reuseport", 0),
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
    ]
    age = options.get("max_connection_age", DEFAULT_MAX_CONNECTION_AGE)
    if age is not None:
        age_grace = options.get("max_connection_age_grace", DEFAULT_MAX_CONNECTION_AGE_GRACE)
        result += [
            ("grpc.max_connection_age_ms", max(1, round(age * 1000))),
            ("grpc.max_connection_age_grace_ms", max(0, round(age_grace * 1000))),
        ]
    return result


class Server:
    """A started server. ``grpc_server`` is the underlying ``grpc.aio.Server``."""

    port: int
    node: str

    def __init__(
        self,
        *,
        grpc_server: grpc.aio.Server,
        health: HealthServicer,
        bindings: Sequence[Binding],
        host: str,
        port: int,
        node: str,
        drain_delay: float,
        grace: float,
        announcer: NodeAnnouncer,
        h3_server: H3Server | None = None,
        h3_announcer: NodeAnnouncer | None = None,
    ) -> None:
        self.grpc_server = grpc_server
        self.h3_server = h3_server
        """The HTTP/3 listener (``http3=True``), else None."""
        self._announcer = announcer
        self._h3_announcer = h3_announcer
        self.health = health
        self.bindings = tuple(bindings)
        self.host = host
        self.port = port
        self.node = node
        self.drain_delay = drain_delay
        self.grace = grace
        self._stopping: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._draining = False

    @property
    def address(self) -> str:
        """``host:port`` as listened on, e.g. ``[::]:50051`` or ``127.0.0.2:41235``."""
        return _format_address(self.host, self.port)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(b.service.name for b in self.bindings)

    @property
    def draining(self) -> bool:
        """Whether ``drain`` or ``stop`` has begun."""
        return self._draining

    async def drain(self) -> None:
        """Health NOT_SERVING for all, wait ``drain_delay``, then ``stop(grace)``.

        The wait ends early if ``stop`` is called meanwhile (``serve`` does that
        on a second SIGTERM/SIGINT).
        """
        self._draining = True
        await self.health.enter_graceful_shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), self.drain_delay)
        await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop: refuse new calls, give in-flight ones ``grace`` seconds, cancel the rest.

        ``grace=None`` means the configured ``grace`` option; 0 stops at once.
        Health turns NOT_SERVING first. Calling again waits for the first stop.
        """
        self._stop_requested.set()
        if self._stopping is None:
            seconds = self.grace if grace is None else grace
            self._stopping = asyncio.ensure_future(self._stop(seconds))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        self._draining = True
        if self.h3_server is not None:
            self.h3_server.goaway()
        await self.health.enter_graceful_shutdown()
        self.health.close_watches()
        # grpc core cancels calls that reached it but no handler yet when it
        # stops (seen as CANCELLED, handler never ran, which a client cannot
        # safely retry). So first refuse new calls ourselves with UNAVAILABLE
        # (trailers-only: clients retry elsewhere and eject this endpoint),
        # let that quiet the connections, then stop with the grace left.
        window = min(REFUSAL_WINDOW, grace / 2)
        if window > 0:
            self._announcer.refusing = True
            if self._h3_announcer is not None:
                self._h3_announcer.refusing = True
            await asyncio.sleep(window)
        if self.h3_server is None:
            await self.grpc_server.stop(grace - window)
        else:
            await asyncio.gather(
                self.grpc_server.stop(grace - window), self.h3_server.stop(grace - window)
            )

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self.grpc_server.wait_for_termination()
        if self.h3_server is not None:
            await self.h3_server.wait_closed()


REFUSAL_WINDOW = 1.0
"""Seconds a stopping server refuses new calls with UNAVAILABLE before grpc stops.

Longer than a client's first ejection (0.5 s), so clients that were refused
stop sending here before grpc's own stop begins."""


UDP_BIND_ATTEMPTS = 5
"""With port 0 and HTTP/3: how many free TCP ports to try whose UDP twin is taken."""


async def start_server(bindings: Sequence[Binding], **options: Unpack[ServeOptions]) -> Server:
    """Start serving ``bindings`` (plus health) and return the running ``Server``.

    With ``http3=True`` the UDP port is bound right after the TCP one, to the
    same number. If that UDP port is taken, ``BindError`` says so; with
    ``port=0`` another free TCP port is tried first (a few times).
    """
    _check_options(options)
    attempts = UDP_BIND_ATTEMPTS if options.get("http3") and options.get("port") == 0 else 1
    for attempt in range(attempts):
        try:
            return await _start_server(bindings, options)
        except UdpPortTaken as error:
            if attempt == attempts - 1:
                raise BindError(str(error)) from error
            _LOG.debug("retrying with another port: %s", error)
    raise AssertionError("unreachable")


async def _start_server(bindings: Sequence[Binding], options: ServeOptions) -> Server:
    host = options.get("host", DEFAULT_HOST)
    port = options.get("port", DEFAULT_PORT)
    node = own_node(options.get("node")) or socket.gethostname()
    health = HealthServicer()
    announcer = NodeAnnouncer(node)
    server = grpc.aio.server(
        interceptors=[announcer, *options.get("interceptors", ())],
        options=_grpc_options(options),
    )
    generics = [generic_handler(b) for b in bindings]
    server.add_generic_rpc_handlers(generics)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for binding in bindings:
        await health.set(binding.service.name, health_pb2.HealthCheckResponse.SERVING)

    address = _format_address(host, port)
    credentials = options.get("server_credentials")
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise BindError(f"cannot listen on {address}: {_bind_reason(host, port)}") from error
    if bound == 0:  # older grpc versions report failure this way
        raise BindError(f"cannot listen on {address}: {_bind_reason(host, port)}")
    h3_server: H3Server | None = None
    h3_announcer: NodeAnnouncer | None = None
    if options.get("http3", False):
        collector = HandlerCollector()
        health_pb2_grpc.add_HealthServicer_to_server(health, collector)
        h3_announcer = NodeAnnouncer(node)
        h3_server = H3Server(
            Dispatcher(
                [*generics, *collector.generic_handlers],
                [h3_announcer, *options.get("interceptors", ())],
            ),
            certfile=str(options.get("certfile")),
            keyfile=str(options.get("keyfile")),
            max_message_size=options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE),
            quic_library=options.get("quic_library", "qh3"),
        )
        try:
            await h3_server.start(host, bound)
        except OSError as error:
            # grpc releases a bound port only when a started server stops.
            await server.start()
            await server.stop(0)
            if isinstance(error, UdpPortTaken):
                raise
            raise BindError(f"cannot listen on UDP {address}: {error}") from error
        announcer.alt_svc = f'h3=":{bound}"'
    await server.start()
    return Server(
        grpc_server=server,
        health=health,
        bindings=bindings,
        host=host,
        port=bound,
        node=node,
        drain_delay=options.get("drain_delay", DEFAULT_DRAIN_DELAY),
        grace=options.get("grace", DEFAULT_GRACE),
        announcer=announcer,
        h3_server=h3_server,
        h3_announcer=h3_announcer,
    )


async def serve(bindings: Sequence[Binding], **options: Unpack[ServeOptions]) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return (or until stopped).

    Logs one line, ``serving <services> on <host:port> as node <node>``. The
    first SIGTERM/SIGINT drains (NOT_SERVING, wait ``drain_delay``, stop with
    ``grace``); a second one skips the rest of the drain delay.
    If the task running ``serve`` is cancelled, the server stops at once.
    """
    handle_signals = options.pop("handle_signals", True)
    server = await start_server(bindings, **options)
    _LOG.info(
        "serving %s on %s as node %s",
        ", ".join(server.services) or "(no services)",
        server.address,
        server.node,
    )
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    installed: list[signal.Signals] = []
    stopping: list[asyncio.Future[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if signalled.is_set():
            _LOG.info("%s again: stopping now (grace %ss)", sig.name, server.grace)
            stopping.append(asyncio.ensure_future(server.stop()))
            return
        _LOG.info("%s: draining (NOT_SERVING, stop in %ss)", sig.name, server.drain_delay)
        signalled.set()

    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                _LOG.warning("cannot handle %s here (not the main thread?)", sig.name)
            else:
                installed.append(sig)
    terminated = asyncio.ensure_future(server.wait_for_termination())
    signal_wait = asyncio.ensure_future(signalled.wait())
    try:
        await asyncio.wait({terminated, signal_wait}, return_when=asyncio.FIRST_COMPLETED)
        if signalled.is_set():
            await server.drain()
            _LOG.info("stopped")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for task in (terminated, signal_wait):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(server.stop(0))

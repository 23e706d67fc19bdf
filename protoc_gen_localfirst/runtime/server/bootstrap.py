"""Server bootstrap: serve servicers from a method table over HTTP/2 (grpc.aio).

Generated modules call ``bind_servicers`` (``binding``) to pair servicer
objects with the services of their proto file, then ``serve`` (run until
SIGTERM/SIGINT, then drain) or ``start_server`` (start and hand back a
``Server``, see ``lifecycle``). Options are ``ServeOptions`` (``options``);
how servicer methods become grpc handlers is ``handlers``.

Every response carries this server's node name in its metadata; see
``announce`` for how and why. The standard ``grpc.health.v1.Health``
service is always served (``health``): ``""`` and every served service are
SERVING from start until ``drain``/``stop``.

HTTP/3
------
With ``http3=True`` (and ``certfile``/``keyfile``) the same bindings, health
service and interceptors are also served over QUIC + HTTP/3 on UDP, on the
same port number as the TCP listener (``http3.server``, imported only then).
HTTP/2 responses then advertise it (``alt-svc`` on streamed responses, a
``localfirst-alt-svc`` trailer on all; see ``announce``). Drain and stop
cover both: HTTP/3 connections get GOAWAY when stopping begins, in-flight
calls get the same grace, then the connections close.

This module re-exports the server API the runtime package exposes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Unpack

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoc_gen_localfirst.runtime.identity import own_node
from protoc_gen_localfirst.runtime.server.announce import NodeAnnouncer
from protoc_gen_localfirst.runtime.server.binding import Binding, Servicer, bind_servicers
from protoc_gen_localfirst.runtime.server.handlers import (
    ServicerContext,
    abort_unimplemented,
    generic_handler,
    unimplemented_stream,
)
from protoc_gen_localfirst.runtime.server.health import HealthServicer
from protoc_gen_localfirst.runtime.server.lifecycle import REFUSAL_WINDOW, Server
from protoc_gen_localfirst.runtime.server.listen import BindError, add_port, format_address
from protoc_gen_localfirst.runtime.server.load import ServerLoad
from protoc_gen_localfirst.runtime.server.logs import install_default_logging
from protoc_gen_localfirst.runtime.server.options import (
    DEFAULT_DRAIN_DELAY,
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServeOptions,
    check_options,
    grpc_options,
    memory_limits,
)
from protoc_gen_localfirst.runtime.server.tls import ServerCertificates
from protoc_gen_localfirst.runtime.wire.framing import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from protoc_gen_localfirst.runtime.http3.server import H3Server

__all__ = [
    "REFUSAL_WINDOW",
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

UDP_BIND_ATTEMPTS = 5
"""With port 0 and HTTP/3: how many free TCP ports to try whose UDP twin is taken."""


async def start_server(bindings: Sequence[Binding], **options: Unpack[ServeOptions]) -> Server:
    """Start serving ``bindings`` (plus health) and return the running ``Server``.

    With ``http3=True`` the UDP port is bound right after the TCP one, to the
    same number. If that UDP port is taken, ``BindError`` says so; with
    ``port=0`` another free TCP port is tried first (a few times).
    """
    check_options(options)
    if not options.get("http3", False):
        return await _start_server(bindings, options)
    from protoc_gen_localfirst.runtime.http3.server import UdpPortTaken

    attempts = UDP_BIND_ATTEMPTS if options.get("port") == 0 else 1
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
    node = own_node(options.get("node")) or socket.gethostname()
    health = HealthServicer()
    limits = memory_limits(options)
    load = ServerLoad(
        options.get("admission"),
        metrics=options.get("load_metrics"),
        max_calls=limits["max_concurrent_calls"],
        max_held_bytes=limits["max_buffered_bytes"],
    )
    announcer = NodeAnnouncer(node, load)
    server = grpc.aio.server(
        interceptors=[announcer, *options.get("interceptors", ())],
        options=grpc_options(options),
    )
    generics = [generic_handler(b) for b in bindings]
    server.add_generic_rpc_handlers(generics)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for binding in bindings:
        await health.set(binding.service.name, health_pb2.HealthCheckResponse.SERVING)
    port = options.get("port", DEFAULT_PORT)
    certificates = _certificates(options)
    credentials = options.get("server_credentials")
    if certificates is not None:
        credentials = certificates.grpc_credentials()
    bound = add_port(server, host, port, credentials)
    h3_server: H3Server | None = None
    h3_announcer: NodeAnnouncer | None = None
    if certificates is not None and options.get("http3", False):
        h3_announcer = NodeAnnouncer(node, load)
        h3_server = await _start_h3(
            server, generics, health, h3_announcer, bound, certificates, options
        )
        announcer.alt_svc = f'h3=":{bound}"'
    await server.start()
    try:
        health_server, health_port = await _start_health_listener(health, host, options)
    except BaseException:
        await server.stop(0)
        if h3_server is not None:
            await h3_server.stop(0)
        raise
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
        health_server=health_server,
        health_port=health_port,
    )


async def _start_health_listener(
    health: HealthServicer, host: str, options: ServeOptions
) -> tuple[grpc.aio.Server | None, int | None]:
    """``health_port``: a plaintext listener serving only the health service."""
    port = options.get("health_port")
    if port is None:
        return None, None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = add_port(server, host, port, None)
    await server.start()
    return server, bound


def _certificates(options: ServeOptions) -> ServerCertificates | None:
    certfile, keyfile = options.get("certfile"), options.get("keyfile")
    if certfile is None or keyfile is None:
        return None
    return ServerCertificates(certfile, keyfile, client_ca_file=options.get("client_ca_file"))


async def _start_h3(
    server: grpc.aio.Server,
    generics: Sequence[grpc.GenericRpcHandler],
    health: HealthServicer,
    announcer: NodeAnnouncer,
    port: int,
    certificates: ServerCertificates,
    options: ServeOptions,
) -> H3Server:
    """Listen for HTTP/3 on UDP ``port`` with the handlers and interceptors of ``server``."""
    from protoc_gen_localfirst.runtime.http3.dispatch import Dispatcher, HandlerCollector
    from protoc_gen_localfirst.runtime.http3.server import H3Server, UdpPortTaken

    limits = memory_limits(options)
    collector = HandlerCollector()
    health_pb2_grpc.add_HealthServicer_to_server(health, collector)
    h3_server = H3Server(
        Dispatcher(
            [*generics, *collector.generic_handlers],
            [announcer, *options.get("interceptors", ())],
        ),
        certificate=certificates.current,
        max_message_size=options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE),
        quic_library=options.get("quic_library", "qh3"),
        max_concurrent_streams=limits["max_concurrent_streams"],
        max_connections=limits["max_connections"],
        max_buffered_bytes=limits["max_buffered_bytes"],
    )
    host = options.get("host", DEFAULT_HOST)
    try:
        await h3_server.start(host, port)
    except OSError as error:
        # grpc releases a bound port only when a started server stops.
        await server.start()
        await server.stop(0)
        if isinstance(error, UdpPortTaken):
            raise
        address = format_address(host, options.get("port", DEFAULT_PORT))
        raise BindError(f"cannot listen on UDP {address}: {error}") from error
    return h3_server


async def serve(bindings: Sequence[Binding], **options: Unpack[ServeOptions]) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return (or until stopped).

    Logs one line, ``serving <services> on <host:port> as node <node>``, on
    stderr if the program configured no logging (``logs``). The
    first SIGTERM/SIGINT drains (NOT_SERVING, wait ``drain_delay``, stop with
    ``grace``); a second one skips the rest of the drain delay.
    If the task running ``serve`` is cancelled, the server stops at once.
    """
    install_default_logging()
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

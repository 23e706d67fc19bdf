"""``ServeOptions``: the keyword options of ``serve``/``start_server``, their
defaults, their validation, and the grpc server options they become."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypedDict

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.http3.options import QUIC_LIBRARIES, QuicLibrary
from protoc_gen_localfirst.runtime.server.load import AdmissionControl, LoadMetrics
from protoc_gen_localfirst.runtime.wire.framing import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["ServeOptions", "check_options", "grpc_options"]

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
    admission: admission control, off by default (None). An int is a fixed
        limit of calls running at once; ``AdmissionControl()`` adapts the
        limit to the latency the server sees. Calls over the limit are
        refused at once, unprocessed (UNAVAILABLE with the
        ``localfirst-overloaded`` trailer), so clients send them elsewhere
        instead of queueing until their deadline. Health checks are never
        refused. Both transports share the count and the limit.
    load_metrics: a function returning custom named metrics (``{"queue": 3.0}``)
        added to the load report every response carries (ORCA
        ``named_metrics``); keep it cheap, it runs once per response.
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
    admission: AdmissionControl | int | None
    load_metrics: LoadMetrics | None


_KNOWN_OPTIONS = frozenset(ServeOptions.__annotations__)


def check_options(options: ServeOptions) -> None:
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


def grpc_options(options: ServeOptions) -> list[tuple[str, Any]]:
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

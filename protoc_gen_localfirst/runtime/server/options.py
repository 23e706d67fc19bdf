"""``ServeOptions``: the keyword options of ``serve``/``start_server``, their
defaults, their validation, and the grpc server options they become."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime.http3.options import (
    QUIC_LIBRARIES,
    QuicLibrary,
    require_quic_library,
)
from protoc_gen_localfirst.runtime.server.load import AdmissionControl, LoadMetrics
from protoc_gen_localfirst.runtime.server.tls import check_client_ca_file, check_tls_files
from protoc_gen_localfirst.runtime.wire.framing import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["ServeOptions", "check_options", "grpc_options", "memory_limits"]

DEFAULT_HOST = "[::]"
DEFAULT_PORT = 50051
DEFAULT_DRAIN_DELAY = 5.0
DEFAULT_GRACE = 10.0
DEFAULT_MAX_CONNECTION_AGE: float | None = 300.0
DEFAULT_MAX_CONNECTION_AGE_GRACE = 30.0
DEFAULT_MAX_CONCURRENT_STREAMS = 32
DEFAULT_MAX_CONCURRENT_CALLS = 128
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024


class ServeOptions(TypedDict, total=False):
    """Keyword options of ``serve``/``start_server``; every key is optional.

    host: address to listen on, default ``"[::]"`` (all interfaces, v4 and v6).
        ``"0.0.0.0"``, ``"127.0.0.2"``, ``"::1"`` and names work too.
    port: TCP port, default 50051; 0 picks a free one (see ``Server.port``).
    health_port: also serve ``grpc.health.v1.Health``, and nothing else, in
        plaintext on this TCP port (0 picks one: ``Server.health_port``);
        default None. For kubelet's ``grpc:`` probes, which cannot speak TLS
        (or present a client certificate) to a server on ``certfile``.
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
    certfile: PEM certificate chain (leaf first) that puts both listeners,
        HTTP/2 and HTTP/3, on TLS; needs ``keyfile``. Without it both are
        plaintext and HTTP/3 is neither served nor advertised. Re-read when
        the file changes (cert-manager renewals): new connections get the new
        certificate, open ones and their calls are untouched.
    keyfile: the certificate's unencrypted PEM private key.
    client_ca_file: PEM CA certificates; clients must then present a
        certificate one of them signed (mTLS), or the handshake fails.
        HTTP/2 only: neither QUIC library can require client certificates,
        so ``http3=True`` with it is refused rather than serving HTTP/3
        clients without one.
    server_credentials: an escape hatch for HTTP/2 only: your own
        ``grpc.ServerCredentials``, instead of ``certfile``/``keyfile``
        (not both; not with ``http3``).
    handle_signals: ``serve`` only: drain on SIGTERM/SIGINT; default True.
    interceptors: extra ``grpc.aio.ServerInterceptor``s, run after the
        node announcer (so they see the announcing context); on HTTP/3 too.
    http3: also serve HTTP/3 (QUIC, UDP) on the same port number; default
        False. Needs ``certfile`` and ``keyfile`` (QUIC always uses TLS).
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

    Memory bounds (an int > 0, or None for no limit). With the defaults the
    abusive clients of ``bench/memory_abuse.py`` grew the server's RSS by
    84-111 MB (0.8-1.6 GB with the bounds off) while other calls kept being
    served (BENCHMARKS.md):

    max_concurrent_streams: request streams one client connection may have
        open at once, default 32 (HTTP/2 ``SETTINGS_MAX_CONCURRENT_STREAMS``
        via grpc's ``grpc.max_concurrent_streams``; HTTP/3 the QUIC
        ``initial_max_streams_bidi`` the server grants, one more per stream
        closed). Clients queue calls beyond it (grpc core may refuse a few
        sent before the client saw the setting: REFUSED_STREAM, unprocessed).
    max_concurrent_calls: calls running at once, server-wide and over both
        transports, default 128. Calls beyond it are refused like
        ``admission``'s (UNAVAILABLE + ``localfirst-overloaded``, before the
        handler runs and before the request body is read, so unprocessed and
        safe to retry elsewhere); health checks are never refused. With
        ``admission`` too, the lower limit applies.
    max_connections: client connections at once, default 1024, per transport.
        HTTP/3: a new QUIC connection beyond it is closed at once
        (CONNECTION_REFUSED, nothing processed). HTTP/2: grpc core's
        ``grpc.max_allowed_incoming_connections``: core closes a TCP
        connection accepted beyond it (the client sees UNAVAILABLE, nothing
        processed).
    max_buffered_bytes: request bytes the server holds for calls, server-wide,
        default 64 MiB; counted twice over, each against this limit:
        - unary requests whose calls run (both transports: grpc reads a
          unary request whole before its handler, which holds it). A request
          that would not fit is refused like ``max_concurrent_calls``'s
          (UNAVAILABLE + ``localfirst-overloaded``, unprocessed), so smaller
          ones keep fitting beside big ones; a call alone always fits.
        - HTTP/3: request bytes received for handlers that have not read
          them yet (one stream alone is also limited, to
          ``max(4 * max_message_size, 16 MiB)``). Over it, the call holding
          the most is shed: RESOURCE_EXHAUSTED and STOP_SENDING, so small
          calls keep working.

    What bounds HTTP/2 memory: the unary requests held (above), at most
    ``max_concurrent_calls`` streamed calls reading one message at a time,
    and per connection at most ``max_concurrent_streams`` HTTP/2
    flow-control windows in flight. A request is refused only once grpc has
    read it, so its bytes are in memory briefly before they are dropped.
    """

    host: str
    port: int
    health_port: int | None
    node: str | None
    drain_delay: float
    grace: float
    max_connection_age: float | None
    max_connection_age_grace: float
    max_message_size: int
    certfile: str | os.PathLike[str] | None
    keyfile: str | os.PathLike[str] | None
    client_ca_file: str | os.PathLike[str] | None
    server_credentials: grpc.ServerCredentials | None
    handle_signals: bool
    interceptors: Sequence[grpc.aio.ServerInterceptor]
    http3: bool
    quic_library: QuicLibrary
    admission: AdmissionControl | int | None
    load_metrics: LoadMetrics | None
    max_concurrent_streams: int | None
    max_concurrent_calls: int | None
    max_connections: int | None
    max_buffered_bytes: int | None


_KNOWN_OPTIONS = frozenset(ServeOptions.__annotations__)


def check_options(options: ServeOptions) -> None:
    """Check every option of ``serve``/``start_server`` before anything listens.

    Errors name the option, the value given and what the option accepts:
    ``TypeError`` for an unknown option or a value of the wrong type,
    ``ValueError`` for one out of range or a file that cannot be used.
    ``admission`` is checked by ``ServerLoad``.
    """
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown server option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN_OPTIONS))}"
        )
    _check_types(options)
    for key in ("drain_delay", "grace", "max_connection_age_grace"):
        if key in options:
            _check_seconds(key, options[key], zero=True)
    if options.get("max_connection_age") is not None:
        _check_seconds("max_connection_age", options["max_connection_age"], zero=False)
    size = options.get("max_message_size")
    if size is not None and size <= 0:
        raise ValueError(f"max_message_size={size!r}: not > 0 (bytes, an int > 0)")
    _check_limits(options)
    for key, value in (("port", options.get("port")), ("health_port", options.get("health_port"))):
        if value is not None and not 0 <= value <= 65535:
            raise ValueError(
                f"{key}={value!r}: out of range (an int in 0..65535; 0 picks a free port)"
            )
    health_port = options.get("health_port")
    if health_port and health_port == options.get("port", DEFAULT_PORT):
        raise ValueError(
            f"health_port={health_port!r}: the same as port (the health listener is a second, "
            "plaintext one; pick another port)"
        )
    library = options.get("quic_library", "qh3")
    if library not in QUIC_LIBRARIES:
        raise ValueError(
            f"quic_library={library!r}: not supported (one of {', '.join(QUIC_LIBRARIES)})"
        )
    _check_tls(options)
    if options.get("http3", False):
        require_quic_library(library, "http3=True")


_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "host": ((str,), "a str (e.g. '[::]' or '127.0.0.1')"),
    "port": ((int,), "an int (0..65535; 0 picks a free port)"),
    "health_port": ((int, type(None)), "an int (0..65535; 0 picks a free port) or None"),
    "node": ((str, type(None)), "a str or None (None: $NODE_NAME, else the host name)"),
    "max_message_size": ((int,), "an int (bytes, > 0)"),
    "server_credentials": (
        (grpc.ServerCredentials, type(None)),
        "grpc.ServerCredentials or None (grpc.ssl_server_credentials(...))",
    ),
    "handle_signals": ((bool,), "a bool (True or False)"),
    "http3": ((bool,), "a bool (True or False)"),
    "quic_library": ((str,), f"a str (one of {', '.join(QUIC_LIBRARIES)})"),
}
"""Options whose type a plain ``isinstance`` decides (bools are not ints here)."""


def _check_types(options: ServeOptions) -> None:
    for key, (types, accepted) in _TYPES.items():
        if key not in options:
            continue
        value = options[key]  # type: ignore[literal-required]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise TypeError(f"{key}={value!r}: not {accepted}")
    interceptors = options.get("interceptors", ())
    if isinstance(interceptors, str | bytes) or not isinstance(interceptors, Iterable):
        raise TypeError(f"interceptors={interceptors!r}: not a list (grpc.aio.ServerInterceptor)")
    for index, interceptor in enumerate(interceptors):
        if not isinstance(interceptor, grpc.aio.ServerInterceptor):
            raise TypeError(
                f"interceptors[{index}]={interceptor!r}: not a grpc.aio.ServerInterceptor"
            )
    metrics = options.get("load_metrics")
    if metrics is not None and not callable(metrics):
        raise TypeError(
            f"load_metrics={metrics!r}: not callable (a function returning "
            "{'name': number, ...}, or None)"
        )


_LIMITS: dict[str, tuple[str, int]] = {
    "max_concurrent_streams": ("request streams per connection", 2**31 - 1),
    "max_concurrent_calls": ("calls at once, server-wide", 2**31 - 1),
    "max_connections": ("client connections at once", 2**31 - 1),
    "max_buffered_bytes": ("bytes, server-wide", 2**62),
}
"""Memory-bound options: what they count, and the largest value accepted."""


def _check_limits(options: ServeOptions) -> None:
    for key, (unit, largest) in _LIMITS.items():
        if key not in options:
            continue
        value = options[key]  # type: ignore[literal-required]
        accepted = f"{unit}: an int in 1..{largest}, or None for no limit"
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key}={value!r}: not an int ({accepted})")
        if not 1 <= value <= largest:
            raise ValueError(f"{key}={value!r}: out of range ({accepted})")


def memory_limits(options: ServeOptions) -> dict[str, int | None]:
    """The four memory-bound options, defaults filled in (None: no limit)."""
    return {
        "max_concurrent_streams": options.get(
            "max_concurrent_streams", DEFAULT_MAX_CONCURRENT_STREAMS
        ),
        "max_concurrent_calls": options.get("max_concurrent_calls", DEFAULT_MAX_CONCURRENT_CALLS),
        "max_connections": options.get("max_connections", DEFAULT_MAX_CONNECTIONS),
        "max_buffered_bytes": options.get("max_buffered_bytes", DEFAULT_MAX_BUFFERED_BYTES),
    }


def _check_seconds(key: str, value: object, *, zero: bool) -> None:
    accepted = f"seconds, a finite number {'>=' if zero else '>'} 0" + (
        "" if zero else ", or None for never"
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key}={value!r}: not a number ({accepted})")
    if not math.isfinite(value):
        raise ValueError(f"{key}={value!r}: not a finite number ({accepted})")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{key}={value!r}: {'negative' if value < 0 else 'zero'} ({accepted})")


def _check_tls(options: ServeOptions) -> None:
    """The TLS options go together (see ``ServeOptions``); the files load."""
    given = {key for key in _TLS_KEYS if options.get(key) is not None}
    if "server_credentials" in given:
        for key in ("certfile", "keyfile", "client_ca_file"):
            if key in given:
                raise ValueError(
                    f"{key}={options.get(key)!r} with server_credentials: pass one or the "
                    "other (certfile/keyfile put HTTP/2 and HTTP/3 on TLS; "
                    "server_credentials is your own HTTP/2-only setting)"
                )
        if options.get("http3", False):
            raise ValueError(
                "server_credentials with http3=True: HTTP/3 cannot use grpc credentials; "
                "pass certfile= and keyfile= instead (they serve both transports)"
            )
        return
    missing = [key for key in ("certfile", "keyfile") if key not in given]
    if options.get("http3", False) and missing:
        raise ValueError(
            f"http3=True needs {' and '.join(missing)}: QUIC always uses TLS "
            "(a certificate chain and its private key, PEM files)"
        )
    if len(missing) == 1:
        present = "certfile" if "certfile" in given else "keyfile"
        raise ValueError(
            f"{present}={options.get(present)!r} needs {missing[0]} too "
            "(a certificate chain and its private key turn TLS on, for both transports)"
        )
    if "client_ca_file" in given:
        if missing:
            raise ValueError(
                f"client_ca_file={options.get('client_ca_file')!r} needs certfile and keyfile: "
                "client certificates are verified only over TLS"
            )
        if options.get("http3", False):
            raise ValueError(
                f"client_ca_file={options.get('client_ca_file')!r} with http3=True: HTTP/3 "
                "cannot require client certificates (qh3 never asks for one; aioquic asks "
                "only through a test hook and does not verify it), so it would serve "
                "clients without a certificate. Serve mTLS over HTTP/2 (http3=False)"
            )
        check_client_ca_file(options.get("client_ca_file"))
    if not missing:
        check_tls_files(options.get("certfile"), options.get("keyfile"))


_TLS_KEYS = ("certfile", "keyfile", "client_ca_file", "server_credentials")


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
    limits = memory_limits(options)
    if limits["max_concurrent_streams"] is not None:
        result.append(("grpc.max_concurrent_streams", limits["max_concurrent_streams"]))
    if limits["max_connections"] is not None:
        result.append(("grpc.max_allowed_incoming_connections", limits["max_connections"]))
    return result

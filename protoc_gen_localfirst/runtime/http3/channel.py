"""The HTTP/3 client channel: one QUIC connection to one ``host:port``, shared by calls.

``H3Channel`` opens its connection lazily (one handshake at a time), reopens it
after it ended, and hands out grpc.aio-style multi-callables whose calls are
``H3ClientCall``s. See ``client`` for the behaviour as a whole.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from protoc_gen_localfirst.runtime import wire
from protoc_gen_localfirst.runtime.http3.client_call import H3ClientCall
from protoc_gen_localfirst.runtime.http3.connection import (
    ConnectFailed,
    H3ClientProtocol,
    client_configuration,
    open_connection,
)
from protoc_gen_localfirst.runtime.http3.intercept import InterceptedCall, for_kind
from protoc_gen_localfirst.runtime.http3.multicallable import MultiCallableChannel
from protoc_gen_localfirst.runtime.http3.options import H3Options
from protoc_gen_localfirst.runtime.tls import ClientTls

__all__ = ["H3Channel", "H3MultiCallable"]

log = logging.getLogger("protoc_gen_localfirst.runtime.http3.client")

_warned_insecure = False


def _warn_insecure_once() -> None:
    global _warned_insecure
    if not _warned_insecure:
        _warned_insecure = True
        log.warning(
            "HTTP/3: insecure_skip_verify=True: server certificates are NOT verified; "
            "anyone on the path can impersonate the server. Use ca_file in production."
        )


def _option(options: Iterable[tuple[str, Any]], key: str, default: int | None) -> int | None:
    value = default
    for name, given in options:
        if name == key:
            value = None if given is None or int(given) < 0 else int(given)
    return value


class H3Channel(MultiCallableChannel):
    """A channel to one ``host:port`` over HTTP/3; see the module docstring.

    ``tls`` says whom to trust and which name to verify (default: the system
    CAs, and ``host``). ``channel_options`` are read for ``grpc.max_receive_message_length``
    (default 4 MiB, -1 unlimited) and ``grpc.max_send_message_length``
    (default unlimited), so the limits match the HTTP/2 channels.
    ``interceptors``: grpc.aio client interceptors, run around each call as
    grpc.aio would (see ``intercept``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ClientTls | None = None,
        options: H3Options | None = None,
        channel_options: Iterable[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.interceptors = tuple(interceptors)
        self.host = host
        self.port = port
        self.options = options or H3Options()
        self.authority = f"[{host}]:{port}" if _is_ipv6(host) else f"{host}:{port}"
        channel_options = tuple(channel_options)
        self.max_receive_message_length = _option(
            channel_options, "grpc.max_receive_message_length", wire.DEFAULT_MAX_MESSAGE_SIZE
        )
        self.max_send_message_length = _option(
            channel_options, "grpc.max_send_message_length", None
        )
        self.tls = tls or ClientTls()
        if self.tls.skip_verify:
            _warn_insecure_once()
        self._connection: H3ClientProtocol | None = None
        self._connecting: asyncio.Task[H3ClientProtocol] | None = None
        self._last_failure: str | None = None
        self.calls: set[H3ClientCall] = set()
        """Calls not yet finished (each call keeps itself here)."""
        self._closed = False

    # connection lifecycle

    async def connect(self, timeout: float | None = None) -> H3ClientProtocol:
        """The open connection, or a new one (one handshake at a time); ``ConnectFailed``."""
        if self._closed:
            raise ConnectFailed("the channel was closed")
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieve)
        limit = self.options.connect_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(self._connecting), limit)
        except TimeoutError:
            raise ConnectFailed(
                f"no QUIC handshake with {self.authority} within {limit:g}s"
            ) from None

    def ready_connection(self) -> H3ClientProtocol | None:
        """The open, usable connection, if any (calls then start without a task)."""
        connection = self._connection
        if connection is None or self._closed or not connection.usable:
            return None
        return connection

    async def _open(self) -> H3ClientProtocol:
        try:
            connection = await open_connection(
                self.host,
                self.port,
                client_configuration(self.host, self.tls, idle_timeout=self.options.idle_timeout),
                self.options.connect_timeout,
            )
        except ConnectFailed as error:
            self._last_failure = str(error)
            raise
        except OSError as error:
            self._last_failure = str(error)
            raise ConnectFailed(f"{self.authority}: {error}") from error
        finally:
            self._connecting = None
        if self._closed:
            connection.shutdown()
            raise ConnectFailed("the channel was closed")
        self._last_failure = None
        previous, self._connection = self._connection, connection
        connection.on_end = self._connection_ended
        if previous is not None and previous.active_streams == 0:
            previous.shutdown()  # GOAWAY'd or idle: nothing left on it
        return connection

    def _connection_ended(self, connection: H3ClientProtocol) -> None:
        if self._connection is connection:
            self._connection = None
            self._last_failure = connection.ended

    def _multicallable(
        self, kind: str, method: str, serializer: Any, deserializer: Any
    ) -> H3MultiCallable:
        return H3MultiCallable(
            self, method, serializer, deserializer, kind, for_kind(self.interceptors, kind)
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        if self._connection is not None and self._connection.usable:
            return grpc.ChannelConnectivity.READY
        if self._connecting is not None:
            return grpc.ChannelConnectivity.CONNECTING
        if try_to_connect:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieve)
            return grpc.ChannelConnectivity.CONNECTING
        if self._last_failure is not None:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.05)

    async def channel_ready(self) -> None:
        while True:
            try:
                await self.connect()
                return
            except ConnectFailed:
                await asyncio.sleep(0.2)

    async def close(self, grace: float | None = None) -> None:
        """Like grpc.aio: with ``grace``, calls get that long to finish; the rest are cancelled."""
        if self._closed:
            return
        self._closed = True
        if grace and self.calls:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_done()) for c in self.calls], timeout=grace
            )
        for call in list(self.calls):
            call.abort(grpc.StatusCode.CANCELLED, "Channel closed!")
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.shutdown()
            self._connection = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"H3Channel({self.authority}, {self.get_state().name})"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


class H3MultiCallable:
    """grpc.aio's multi-callable: ``multicallable(request_or_iterator, timeout=, metadata=)``."""

    def __init__(
        self,
        channel: H3Channel,
        path: str,
        serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None,
        kind: str,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._kind = kind
        self._interceptors = tuple(interceptors)
        self._channel = channel
        self._path = path
        self._serializer = serializer or _identity
        self._deserializer = deserializer or _identity
        self._client_streaming = kind.startswith("stream_")
        self._server_streaming = kind.endswith("_stream")

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: wire.MetadataInput | None = None,
        **_: Any,
    ) -> H3ClientCall | InterceptedCall:
        if self._interceptors:
            return InterceptedCall(
                self._interceptors, self._kind, self._path, request, timeout, metadata, self._call
            )
        return self._call(self._path, request, timeout, metadata)

    def _call(
        self, path: str, request: Any, timeout: float | None, metadata: wire.MetadataInput | None
    ) -> H3ClientCall:
        return H3ClientCall(
            self._channel,
            path,
            request,
            self._serializer,
            self._deserializer,
            timeout=timeout,
            metadata=tuple(metadata or ()),
            client_streaming=self._client_streaming,
            server_streaming=self._server_streaming,
        )


def _identity(value: Any) -> Any:
    return value

"""Client cores that generated clients subclass.

CONTRACT STUB - signatures are final; bodies are being written.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from protoc_gen_localfirst.runtime.methods import MethodInfo, RequestT, ResponseT
from protoc_gen_localfirst.runtime.retry import RetryPolicy

Metadata = Sequence[tuple[str, str | bytes]]


class AsyncClient:
    def __init__(
        self,
        target: str,
        *,
        node: str | None = None,
        zone: str | None = None,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        raise NotImplementedError

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> AsyncIterator[ResponseT]:
        raise NotImplementedError

    async def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        raise NotImplementedError

    def _stream_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> AsyncIterator[ResponseT]:
        raise NotImplementedError


class SyncClient:
    def __init__(
        self,
        target: str,
        *,
        node: str | None = None,
        zone: str | None = None,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _unary_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        raise NotImplementedError

    def _unary_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> Iterator[ResponseT]:
        raise NotImplementedError

    def _stream_unary(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> ResponseT:
        raise NotImplementedError

    def _stream_stream(
        self,
        method: MethodInfo[RequestT, ResponseT],
        requests: Iterable[RequestT],
        *,
        timeout: float | None,
        metadata: Metadata | None,
        retry: RetryPolicy | None,
    ) -> Iterator[ResponseT]:
        raise NotImplementedError

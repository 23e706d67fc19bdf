"""The method table: what generated code tells the runtime about each rpc.

Generated modules hold one ``ServiceInfo`` per service; the client, the
grpc.aio server registration and (later) the HTTP/3 server all read the same
table, so behaviour is written once here and never copied into templates.

The plugin imports this module too (it is the one module the two share), so it
imports nothing outside the standard library at run time: protobuf's
``Message`` is only the type checker's bound for the message type variables.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Unpack

if TYPE_CHECKING:
    from google.protobuf.message import Message

RequestT = TypeVar("RequestT", bound="Message")
ResponseT = TypeVar("ResponseT", bound="Message")


class MethodKind(enum.Enum):
    """The four gRPC call shapes, named as grpc names its multi-callables."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"

    @property
    def client_streaming(self) -> bool:
        return self in (MethodKind.STREAM_UNARY, MethodKind.STREAM_STREAM)

    @property
    def server_streaming(self) -> bool:
        return self in (MethodKind.UNARY_STREAM, MethodKind.STREAM_STREAM)


class Idempotency(enum.Enum):
    """``MethodOptions.idempotency_level`` from descriptor.proto."""

    IDEMPOTENCY_UNKNOWN = 0
    NO_SIDE_EFFECTS = 1
    IDEMPOTENT = 2


@dataclass(frozen=True)
class MethodPolicy:
    """Call policy a proto sets for an rpc (``localfirst/options.proto``).

    Every field is optional: None means "the client's setting" (its
    ``RetryPolicy`` and defaults). The plugin merges the service's
    ``default_call_policy`` with the rpc's ``call_policy`` (the rpc wins);
    a per-call ``retry=`` override wins over both.
    """

    max_attempts: int | None = None
    initial_backoff: float | None = None
    max_backoff: float | None = None
    backoff_multiplier: float | None = None
    retryable_codes: tuple[str, ...] | None = None
    """``grpc.StatusCode`` names, e.g. ``("UNAVAILABLE", "RESOURCE_EXHAUSTED")``."""
    per_attempt_timeout: float | None = None
    hedging_delay: float | None = None
    """Seconds before a hedged attempt goes to the next endpoint (NO_SIDE_EFFECTS rpcs)."""

    def replace(self, **changes: Unpack[PolicyFields]) -> MethodPolicy:
        """This policy with ``changes``; generated code writes an rpc's policy as
        its service's default policy ``.replace(...)`` the fields the rpc changes."""
        return dataclasses.replace(self, **changes)


class PolicyFields(TypedDict, total=False):
    """``MethodPolicy``'s fields as keyword arguments (a test keeps the two equal)."""

    max_attempts: int | None
    initial_backoff: float | None
    max_backoff: float | None
    backoff_multiplier: float | None
    retryable_codes: tuple[str, ...] | None
    per_attempt_timeout: float | None
    hedging_delay: float | None


NO_POLICY = MethodPolicy()


@dataclass(frozen=True)
class MethodInfo(Generic[RequestT, ResponseT]):
    """One rpc: its wire path, shape, message types and retry-relevant facts."""

    service: str
    """Fully qualified service name, e.g. ``greeter.v1.Greeter``."""
    name: str
    """The rpc name as written in the proto, e.g. ``SayHello``."""
    kind: MethodKind
    request_type: type[RequestT]
    response_type: type[ResponseT]
    idempotency: Idempotency = Idempotency.IDEMPOTENCY_UNKNOWN
    handler_name: str = ""
    """Attribute on a servicer that implements this rpc; the rpc name unless
    that is a Python keyword (``None`` -> ``None_``)."""
    deprecated: bool = False
    policy: MethodPolicy = NO_POLICY
    """Retry/hedging settings from the proto's localfirst options."""

    def __post_init__(self) -> None:
        if not self.handler_name:
            object.__setattr__(self, "handler_name", self.name)

    @functools.cached_property
    def path(self) -> str:
        """The HTTP/2 ``:path``, ``/package.Service/Method``."""
        return f"/{self.service}/{self.name}"

    def serialize_request(self, request: RequestT) -> bytes:
        return request.SerializeToString()

    def deserialize_request(self, data: bytes) -> RequestT:
        return self.request_type.FromString(data)

    def serialize_response(self, response: ResponseT) -> bytes:
        return response.SerializeToString()

    def deserialize_response(self, data: bytes) -> ResponseT:
        return self.response_type.FromString(data)


@dataclass(frozen=True)
class ServiceInfo:
    """One service: its fully qualified name and its rpcs in proto order."""

    name: str
    methods: tuple[MethodInfo[Any, Any], ...] = field(default=())

    def method(self, name: str) -> MethodInfo[Any, Any]:
        """The method with rpc name ``name``; KeyError names the service."""
        for method in self.methods:
            if method.name == name:
                return method
        raise KeyError(f"service {self.name} has no rpc named {name!r}")

"""What generated code imports. Nothing in here generates code."""

from protoc_gen_localfirst.runtime.balancer import EjectionPolicy
from protoc_gen_localfirst.runtime.client import AsyncClient, Metadata, RequestStream, SyncClient
from protoc_gen_localfirst.runtime.discovery import (
    DiscoveryError,
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
)
from protoc_gen_localfirst.runtime.endpoints import Endpoint, TargetError
from protoc_gen_localfirst.runtime.errors import AttemptRecord, CallFailedError
from protoc_gen_localfirst.runtime.h3_client import H3Options
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.methods import (
    Idempotency,
    MethodInfo,
    MethodKind,
    MethodPolicy,
    ServiceInfo,
)
from protoc_gen_localfirst.runtime.metrics import (
    BaseObserver,
    CallObserver,
    ClientStats,
    LoggingObserver,
)
from protoc_gen_localfirst.runtime.retry import NO_RETRY, RetryPolicy, RetryThrottling
from protoc_gen_localfirst.runtime.server import (
    BindError,
    Binding,
    ServeOptions,
    Server,
    Servicer,
    ServicerContext,
    abort_unimplemented,
    bind_servicers,
    serve,
    start_server,
    unimplemented_stream,
)

__all__ = [
    "NODE_METADATA_KEY",
    "NO_RETRY",
    "AsyncClient",
    "AttemptRecord",
    "BaseObserver",
    "BindError",
    "Binding",
    "CallFailedError",
    "CallObserver",
    "ClientStats",
    "DiscoveryError",
    "DnsOptions",
    "EjectionPolicy",
    "Endpoint",
    "EndpointSource",
    "H3Options",
    "Idempotency",
    "KubernetesOptions",
    "LoggingObserver",
    "Metadata",
    "MethodInfo",
    "MethodKind",
    "MethodPolicy",
    "RequestStream",
    "RetryPolicy",
    "RetryThrottling",
    "ServeOptions",
    "Server",
    "ServiceInfo",
    "Servicer",
    "ServicerContext",
    "SyncClient",
    "TargetError",
    "abort_unimplemented",
    "bind_servicers",
    "serve",
    "start_server",
    "unimplemented_stream",
]

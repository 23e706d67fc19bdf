"""What generated code imports. Nothing in here generates code."""

from protoc_gen_localfirst.runtime.client.actions import Metadata
from protoc_gen_localfirst.runtime.client.aio import AsyncClient, RequestStream
from protoc_gen_localfirst.runtime.client.balancer import EjectionPolicy
from protoc_gen_localfirst.runtime.client.errors import AttemptRecord, CallFailedError
from protoc_gen_localfirst.runtime.client.load import STRICT_LOCALITY, LocalityPolicy
from protoc_gen_localfirst.runtime.client.observers import (
    AttemptFinished,
    AttemptInfo,
    BaseObserver,
    CallFinished,
    CallInfo,
    CallObserver,
    ClientStats,
    LoggingObserver,
)
from protoc_gen_localfirst.runtime.client.policy import NO_RETRY, RetryPolicy
from protoc_gen_localfirst.runtime.client.sync import SyncClient
from protoc_gen_localfirst.runtime.client.throttling import RetryThrottling
from protoc_gen_localfirst.runtime.compat import RUNTIME_API, require_runtime
from protoc_gen_localfirst.runtime.discovery import (
    DiscoveryError,
    DnsOptions,
    EndpointSource,
    KubernetesOptions,
)
from protoc_gen_localfirst.runtime.discovery.endpoints import Endpoint, TargetError
from protoc_gen_localfirst.runtime.http3.options import H3Options
from protoc_gen_localfirst.runtime.identity import NODE_METADATA_KEY
from protoc_gen_localfirst.runtime.server.bootstrap import (
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
from protoc_gen_localfirst.runtime.server.load import AdmissionControl
from protoc_gen_localfirst.schema import (
    Idempotency,
    MethodInfo,
    MethodKind,
    MethodPolicy,
    ServiceInfo,
)

__all__ = [
    "NODE_METADATA_KEY",
    "NO_RETRY",
    "RUNTIME_API",
    "STRICT_LOCALITY",
    "AdmissionControl",
    "AsyncClient",
    "AttemptFinished",
    "AttemptInfo",
    "AttemptRecord",
    "BaseObserver",
    "BindError",
    "Binding",
    "CallFailedError",
    "CallFinished",
    "CallInfo",
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
    "LocalityPolicy",
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
    "require_runtime",
    "serve",
    "start_server",
    "unimplemented_stream",
]

"""Descriptors -> plain view models for the templates.

``build_file_model`` reads one ``FileDescriptorProto`` (plus the type index of
every file in the request) and returns frozen dataclasses that hold every
decision the template needs: Python names, method kinds, type expressions,
imports, idempotency, deprecation, comment text, which keyword arguments differ
from their defaults, and where lines are cut. Templates only print.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from protoc_gen_localfirst.codegen import descriptors, naming, policy
from protoc_gen_localfirst.codegen.descriptors import (
    FILE_SERVICE,
    SERVICE_METHOD,
    GenerationError,
    Locations,
    TypeIndex,
)
from protoc_gen_localfirst.codegen.literals import string_literal, string_pieces
from protoc_gen_localfirst.codegen.options import PluginOptions
from protoc_gen_localfirst.codegen.reserved import (
    CLIENT_RESERVED,
    MODULE_RESERVED,
    SERVICER_RESERVED,
)

RUNTIME_API = 1
"""The runtime API generated modules are written against (``require_runtime(..., api=)``).
Equal to ``protoc_gen_localfirst.runtime.compat.RUNTIME_API`` of this release (a test checks);
bump both when generated code starts to need something an older runtime lacks."""

LINE_WIDTH = 100
"""Generated lines stay within this (ruff's line-length for the repository)."""
DOC_WIDTH = 72
"""Width of the prose the generator writes into docstrings."""


@dataclass(frozen=True)
class ImportModel:
    module: str
    alias: str

    @property
    def statement(self) -> str:
        return naming.import_statement(self.module, self.alias)


@functools.cache
def _wrap(text: str) -> str:
    return textwrap.fill(text, DOC_WIDTH, break_long_words=False, break_on_hyphens=False)


def _note(text: str) -> str:
    return textwrap.fill(
        f".. deprecated:: {text}",
        DOC_WIDTH,
        subsequent_indent="   ",
        break_long_words=False,
        break_on_hyphens=False,
    )


@dataclass(frozen=True)
class PolicyModel:
    """How ``policy=`` is written: ``call`` alone (a constant) or ``call(args)``; nothing
    when ``call`` is empty (the rpc has no localfirst call policy)."""

    call: str = ""
    args: tuple[tuple[str, str], ...] = ()
    """``(keyword, Python literal)``."""


@dataclass(frozen=True)
class MethodModel:
    name: str
    """rpc name as in the proto (the wire name)."""
    kind: str
    """``MethodKind`` member name, e.g. ``UNARY_STREAM``."""
    client_name: str
    """snake_case client method name, keyword- and collision-escaped."""
    handler_name: str
    """Servicer method name: the rpc name unless that is a keyword (``None_``)."""
    constant: str
    """Private module constant holding the ``MethodInfo``."""
    request_type: str
    response_type: str
    idempotency: str
    """``Idempotency`` member name."""
    deprecation: str
    """Why the rpc is deprecated (the DeprecationWarning text), or ``""``."""
    doc: str
    """The rpc's proto comments (or a one-line fallback)."""
    path: str
    policy: PolicyModel = PolicyModel()

    @property
    def deprecated(self) -> bool:
        return bool(self.deprecation)

    @functools.cached_property
    def table_options(self) -> tuple[tuple[str, str], ...]:
        """``MethodInfo`` keyword arguments besides the required ones and ``policy``,
        as ``(keyword, expression)``: only those that differ from their defaults."""
        options: list[tuple[str, str]] = []
        if self.idempotency != "IDEMPOTENCY_UNKNOWN":
            options.append(("idempotency", f"_lf.Idempotency.{self.idempotency}"))
        if self.handler_name != self.name:
            options.append(("handler_name", string_literal(self.handler_name)))
        if self.deprecated:
            options.append(("deprecated", "True"))
        return tuple(options)

    @functools.cached_property
    def client_doc(self) -> str:
        if not self.deprecation:
            return self.doc
        return f"{self.doc}\n\n" + _note(f"{self.deprecation}; calls emit DeprecationWarning.")

    @functools.cached_property
    def servicer_doc(self) -> str:
        if not self.deprecation:
            return self.doc
        return f"{self.doc}\n\n" + _note(f"{self.deprecation}.")

    @functools.cached_property
    def deprecation_pieces(self) -> tuple[str, ...]:
        """The warning text cut for adjacent literals at 12 spaces (inside ``warnings.warn(``)."""
        return string_pieces(self.deprecation, 12, LINE_WIDTH)

    @property
    def client_streaming(self) -> bool:
        return self.kind in ("STREAM_UNARY", "STREAM_STREAM")

    @property
    def server_streaming(self) -> bool:
        return self.kind in ("UNARY_STREAM", "STREAM_STREAM")

    @functools.cached_property
    def context_type(self) -> str:
        return f"_lf.ServicerContext[{self.request_type}, {self.response_type}]"

    @functools.cached_property
    def context_inline(self) -> bool:
        """Whether ``        context: <context_type>,`` fits on one line."""
        return len(f"        context: {self.context_type},") <= LINE_WIDTH


_ASYNC_NOTE = (
    "Asyncio client: each call goes to a replica on this node first, then this zone, then"
    " anywhere, retrying only where that is safe. Use as ``async with {}(target) as client:``."
)
_SYNC_NOTE = (
    "Blocking client: each call goes to a replica on this node first, then this zone, then"
    " anywhere, retrying only where that is safe. Use as ``with {}(target) as client:``."
)
_SERVICER_NOTE = (
    "Subclass and override the rpcs you implement; pass an instance to ``serve``. The methods"
    " are deliberately not abstract: an rpc you do not override answers UNIMPLEMENTED, as"
    " grpc's generated servicers do, so adding an rpc to the proto never breaks a server that"
    " has not implemented it yet. Method names are the rpc names, so an existing"
    " ``_pb2_grpc`` servicer works too."
)


@dataclass(frozen=True)
class ServiceModel:
    name: str
    full_name: str
    constant: str
    client_class: str
    sync_client_class: str
    servicer_class: str
    doc: str
    methods: tuple[MethodModel, ...]
    policy_constant: str = ""
    """Module constant holding the service's default ``MethodPolicy``; ``""`` if it sets none."""
    default_policy: tuple[tuple[str, str], ...] = ()
    """That policy's ``(keyword, Python literal)`` arguments."""

    @functools.cached_property
    def client_doc(self) -> str:
        return f"{self.doc}\n\n{_wrap(_ASYNC_NOTE.format(self.client_class))}"

    @property
    def sync_client_doc(self) -> str:
        return f"{self.doc}\n\n{_wrap(_SYNC_NOTE.format(self.sync_client_class))}"

    @functools.cached_property
    def servicer_doc(self) -> str:
        return f"{self.doc}\n\n{_wrap(_SERVICER_NOTE)}"


@dataclass(frozen=True)
class FileModel:
    proto_file: str
    output_file: str
    version: str
    """The generator's version, recorded as ``GENERATOR_VERSION``."""
    runtime_import: str
    imports: tuple[ImportModel, ...]
    services: tuple[ServiceModel, ...]
    options: PluginOptions
    exports: tuple[str, ...]
    """``__all__``, in definition order."""
    runtime_api: int = RUNTIME_API

    @property
    def doc(self) -> str:
        return f"Local-first gRPC clients and server bootstrap for {self.proto_file}."

    @property
    def methods(self) -> Iterator[MethodModel]:
        for service in self.services:
            yield from service.methods

    @property
    def uses_warnings(self) -> bool:
        clients = self.options.async_client or self.options.sync_client
        return clients and any(m.deprecated for m in self.methods)

    @property
    def typing_imports(self) -> tuple[str, ...]:
        """Names to import from ``collections.abc`` (only those used)."""
        opts = self.options
        methods = list(self.methods)
        used: set[str] = set()
        if any(m.server_streaming for m in methods) and (opts.async_client or opts.server):
            used.add("AsyncIterator")
        if any(m.client_streaming for m in methods):
            if opts.sync_client:
                used.add("Iterable")
            if opts.server:
                used.add("AsyncIterator")
        if any(m.server_streaming for m in methods) and opts.sync_client:
            used.add("Iterator")
        return tuple(sorted(used))


def _client_method_name(namespace: naming.Namespace, rpc: str) -> str:
    wanted = naming.snake_case(rpc)
    if naming.is_reserved_word(rpc):
        # ``None`` -> ``none_``, matching its handler ``None_``: the escape
        # follows the rpc name, not only the converted one.
        wanted += "_"
    if wanted.startswith("_"):
        # Underscore names belong to the runtime (its private attributes are not
        # all visible on the class), so an rpc ``_Foo`` becomes ``rpc_foo``.
        wanted = "rpc" + wanted
    return namespace.claim(wanted)


@dataclass(frozen=True)
class _FileContext:
    """What every service and method of one file is built from."""

    file: descriptor_pb2.FileDescriptorProto
    index: TypeIndex
    locations: Locations
    prefix: str
    """``package.`` (or ``""``), to make fully qualified service names."""


@dataclass(frozen=True)
class _ServiceNames:
    """The module-level names of one service, claimed before any model is built."""

    constant: str
    client: str
    servicer: str
    sync_client: str
    methods: tuple[str, ...]
    policy: str


def _policy_error(exc: policy.PolicyError) -> GenerationError:
    return GenerationError(str(exc))


def _default_policies(ctx: _FileContext) -> list[policy.Policy]:
    """Every service's validated ``default_call_policy``, in proto order."""
    try:
        return [
            policy.service_policy(s.options, file=ctx.file.name, service=ctx.prefix + s.name)
            for s in ctx.file.service
        ]
    except policy.PolicyError as exc:
        raise _policy_error(exc) from exc


def _imports(ctx: _FileContext) -> tuple[ImportModel, ...]:
    """The ``_pb2`` modules of every request and response type, sorted; resolving
    them all first also checks every type before any name is handed out."""
    imports: dict[str, ImportModel] = {}
    for service in ctx.file.service:
        for method in service.method:
            where = f"{ctx.file.name}: rpc {ctx.prefix}{service.name}.{method.name}"
            for type_name in (method.input_type, method.output_type):
                ref = descriptors.resolve(ctx.index, type_name, where)
                module = naming.module_name(ref.proto_file)
                imports.setdefault(ref.alias, ImportModel(module, ref.alias))
    return tuple(sorted(imports.values(), key=lambda i: (i.module, i.alias)))


def _claim_names(
    top: naming.Namespace,
    services: Sequence[descriptor_pb2.ServiceDescriptorProto],
    defaults: Sequence[policy.Policy],
) -> list[_ServiceNames]:
    """Public names first, in priority order, so a clash renames the least used
    name: service tables, then async clients, servicers, sync clients. Private
    method constants come after them, service policy constants last."""
    upper = [naming.upper_snake_case(s.name) for s in services]
    constants = [top.claim(f"{u}_SERVICE") for u in upper]
    clients = [top.claim(f"{s.name}Client") for s in services]
    servicers = [top.claim(f"{s.name}Servicer") for s in services]
    sync_clients = [top.claim(f"{s.name}SyncClient") for s in services]
    methods = [
        tuple(
            top.claim(f"_{u}_{naming.upper_snake_case(m.name).lstrip('_')}") for m in service.method
        )
        for u, service in zip(upper, services, strict=True)
    ]
    policies = [
        "" if policy.is_empty(d) else top.claim(f"_{u}_POLICY")
        for u, d in zip(upper, defaults, strict=True)
    ]
    return [
        _ServiceNames(*names)
        for names in zip(
            constants, clients, servicers, sync_clients, methods, policies, strict=True
        )
    ]


def _policy_model(merged: policy.Policy, default: policy.Policy, constant: str) -> PolicyModel:
    """``policy=`` of one rpc: nothing, the service constant, or what differs from it."""
    if policy.is_empty(merged):
        return PolicyModel()
    if not constant:
        return PolicyModel("_lf.MethodPolicy", policy.keyword_literals(merged))
    if merged == default:
        return PolicyModel(constant)
    return PolicyModel(f"{constant}.replace", policy.changed_literals(merged, default))


def _deprecation(
    ctx: _FileContext, service: descriptor_pb2.ServiceDescriptorProto, rpc: str, own: bool
) -> str:
    """The DeprecationWarning text of an rpc (``own``: the rpc itself is marked)."""
    if not (own or service.options.deprecated):
        return ""
    marked = "rpc" if own else "service"
    return (
        f"{ctx.prefix}{service.name}.{rpc} is deprecated: its {marked} is marked"
        f" deprecated in {ctx.file.name}"
    )


@dataclass(frozen=True)
class _ServiceScope:
    """One service while its methods are built: the per-class namespaces and its policy."""

    index: int
    service: descriptor_pb2.ServiceDescriptorProto
    names: _ServiceNames
    default_policy: policy.Policy
    client_ns: naming.Namespace
    handler_ns: naming.Namespace


def _method_model(
    ctx: _FileContext,
    scope: _ServiceScope,
    m_index: int,
    method: descriptor_pb2.MethodDescriptorProto,
) -> MethodModel:
    full_name = ctx.prefix + scope.service.name
    where = f"{ctx.file.name}: rpc {full_name}.{method.name}"
    idempotency = descriptors.idempotency(method)
    try:
        merged = policy.method_policy(
            method.options,
            scope.default_policy,
            file=ctx.file.name,
            service=full_name,
            rpc=method.name,
            idempotency=idempotency,
        )
    except policy.PolicyError as exc:
        raise _policy_error(exc) from exc
    doc = descriptors.comments(ctx.locations, (FILE_SERVICE, scope.index, SERVICE_METHOD, m_index))
    return MethodModel(
        name=method.name,
        kind=descriptors.kind(method),
        client_name=_client_method_name(scope.client_ns, method.name),
        handler_name=scope.handler_ns.claim(method.name),
        constant=scope.names.methods[m_index],
        request_type=descriptors.resolve(ctx.index, method.input_type, where).expression,
        response_type=descriptors.resolve(ctx.index, method.output_type, where).expression,
        idempotency=idempotency,
        deprecation=_deprecation(ctx, scope.service, method.name, method.options.deprecated),
        doc=doc or f"Call ``/{full_name}/{method.name}``.",
        path=f"/{full_name}/{method.name}",
        policy=_policy_model(merged, scope.default_policy, scope.names.policy),
    )


def _service_model(
    ctx: _FileContext,
    s_index: int,
    service: descriptor_pb2.ServiceDescriptorProto,
    names: _ServiceNames,
    default_policy: policy.Policy,
) -> ServiceModel:
    full_name = ctx.prefix + service.name
    scope = _ServiceScope(
        s_index,
        service,
        names,
        default_policy,
        client_ns=naming.Namespace(CLIENT_RESERVED),
        handler_ns=naming.Namespace(SERVICER_RESERVED),
    )
    methods = tuple(_method_model(ctx, scope, i, m) for i, m in enumerate(service.method))
    doc = descriptors.comments(ctx.locations, (FILE_SERVICE, s_index))
    return ServiceModel(
        name=service.name,
        full_name=full_name,
        constant=names.constant,
        client_class=names.client,
        sync_client_class=names.sync_client,
        servicer_class=names.servicer,
        doc=doc or f"The ``{full_name}`` service.",
        methods=methods,
        policy_constant=names.policy,
        default_policy=policy.keyword_literals(default_policy),
    )


def _exports(services: Sequence[ServiceModel], options: PluginOptions) -> tuple[str, ...]:
    """``__all__``: tables, then each service's classes, then the module functions."""
    exports = [model.constant for model in services]
    for model in services:
        if options.async_client:
            exports.append(model.client_class)
        if options.sync_client:
            exports.append(model.sync_client_class)
        if options.server:
            exports.append(model.servicer_class)
    exports.append("SERVICES")
    if options.server:
        exports += ["serve", "start_server"]
    return tuple(exports)


def build_file_model(
    file: descriptor_pb2.FileDescriptorProto,
    index: TypeIndex,
    options: PluginOptions,
    version: str,
) -> FileModel:
    """The view model of one proto file; raises ``GenerationError`` naming the file."""
    descriptors.check_file(file)
    ctx = _FileContext(
        file, index, descriptors.locations(file), f"{file.package}." if file.package else ""
    )
    imports = _imports(ctx)
    top = naming.Namespace(MODULE_RESERVED | {i.alias for i in imports})
    defaults = _default_policies(ctx)
    names = _claim_names(top, file.service, defaults)
    services = tuple(
        _service_model(ctx, i, service, names[i], defaults[i])
        for i, service in enumerate(file.service)
    )
    return FileModel(
        proto_file=file.name,
        output_file=naming.output_filename(file.name),
        version=version,
        runtime_import=naming.import_statement(options.runtime_module, "_lf"),
        imports=imports,
        services=services,
        options=options,
        exports=_exports(services, options),
    )

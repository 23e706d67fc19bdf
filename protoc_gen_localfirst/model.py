"""Descriptors -> plain view models for the templates.

``build_file_model`` reads one ``FileDescriptorProto`` (plus the type index of
every file in the request) and returns frozen dataclasses that hold every
decision the template needs: Python names, method kinds, type expressions,
imports, idempotency, deprecation and comment text. Templates only print.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from protoc_gen_localfirst import naming, policy
from protoc_gen_localfirst.options import PluginOptions
from protoc_gen_localfirst.runtime.client.core import AsyncClient, SyncClient
from protoc_gen_localfirst.runtime.server.bootstrap import Servicer


class GenerationError(Exception):
    """The proto cannot be turned into Python; the message names the file."""


# SourceCodeInfo paths: FileDescriptorProto.message_type = 4, .service = 6,
# DescriptorProto.nested_type = 3, ServiceDescriptorProto.method = 2.
_FILE_MESSAGE = descriptor_pb2.FileDescriptorProto.MESSAGE_TYPE_FIELD_NUMBER
_FILE_SERVICE = descriptor_pb2.FileDescriptorProto.SERVICE_FIELD_NUMBER
_SERVICE_METHOD = descriptor_pb2.ServiceDescriptorProto.METHOD_FIELD_NUMBER

# Names a generated client method must not take: everything the runtime base
# classes define (close, __aenter__, _unary_unary, ...), looked up on the real
# classes so that a new runtime method is respected on the next generation.
CLIENT_RESERVED = frozenset(dir(AsyncClient)) | frozenset(dir(SyncClient))
SERVICER_RESERVED = frozenset(dir(Servicer)) | {"SERVICE"}

# Top-level names the module template defines or imports itself.
MODULE_RESERVED = frozenset(
    {
        "annotations",
        "warnings",
        "AsyncIterable",
        "AsyncIterator",
        "Iterable",
        "Iterator",
        "ClassVar",
        "Unpack",
        "_lf",
        "SERVICES",
        "serve",
        "start_server",
        "__all__",
        "__doc__",
        "object",
        "float",
        "tuple",
        "DeprecationWarning",
    }
)


@dataclass(frozen=True)
class MessageRef:
    """Where a message type lives: its proto file and its (nested) Python name."""

    proto_file: str
    python_name: str
    """``Outer.Inner`` for nested messages."""

    @property
    def alias(self) -> str:
        return naming.module_alias(self.proto_file)

    @property
    def expression(self) -> str:
        return f"{self.alias}.{self.python_name}"


TypeIndex = Mapping[str, MessageRef]
"""Fully qualified message name with leading dot (``.greeter.v1.HelloRequest``)."""


def build_type_index(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict[str, MessageRef]:
    index: dict[str, MessageRef] = {}

    def walk(
        messages: Iterable[descriptor_pb2.DescriptorProto], scope: str, outer: str, proto: str
    ) -> None:
        for message in messages:
            python_name = f"{outer}.{message.name}" if outer else message.name
            full = f"{scope}.{message.name}"
            index[full] = MessageRef(proto, python_name)
            walk(message.nested_type, full, python_name, proto)

    for file in files:
        scope = f".{file.package}" if file.package else ""
        walk(file.message_type, scope, "", file.name)
    return index


@dataclass(frozen=True)
class ImportModel:
    module: str
    alias: str

    @property
    def statement(self) -> str:
        return naming.import_statement(self.module, self.alias)


def _note(text: str) -> str:
    return textwrap.fill(
        f".. deprecated:: {text}",
        72,
        subsequent_indent="   ",
        break_long_words=False,
        break_on_hyphens=False,
    )


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
    policy: tuple[tuple[str, str], ...] = ()
    """``MethodPolicy`` keyword arguments as ``(name, Python literal)``; empty
    when the proto sets no localfirst call policy (no ``policy=`` is emitted)."""

    @property
    def deprecated(self) -> bool:
        return bool(self.deprecation)

    @property
    def client_doc(self) -> str:
        if not self.deprecation:
            return self.doc
        return f"{self.doc}\n\n" + _note(f"{self.deprecation}; calls emit DeprecationWarning.")

    @property
    def servicer_doc(self) -> str:
        if not self.deprecation:
            return self.doc
        return f"{self.doc}\n\n" + _note(f"{self.deprecation}.")

    @property
    def client_streaming(self) -> bool:
        return self.kind in ("STREAM_UNARY", "STREAM_STREAM")

    @property
    def server_streaming(self) -> bool:
        return self.kind in ("UNARY_STREAM", "STREAM_STREAM")


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


@dataclass(frozen=True)
class FileModel:
    proto_file: str
    output_file: str
    version: str
    runtime_import: str
    imports: tuple[ImportModel, ...]
    services: tuple[ServiceModel, ...]
    options: PluginOptions
    exports: tuple[str, ...]
    """``__all__``, in definition order."""

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


def clean_comment(text: str) -> str:
    """Comment text from SourceCodeInfo without the space after ``//``, trailing
    whitespace or surrounding blank lines."""
    lines = [line.rstrip() for line in text.splitlines()]
    return textwrap.dedent("\n".join(lines)).strip("\n")


def _comments(
    locations: Mapping[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location],
    path: tuple[int, ...],
) -> str:
    location = locations.get(path)
    if location is None:
        return ""
    parts = [clean_comment(location.leading_comments), clean_comment(location.trailing_comments)]
    return "\n\n".join(part for part in parts if part)


def _kind(method: descriptor_pb2.MethodDescriptorProto) -> str:
    match (method.client_streaming, method.server_streaming):
        case (False, False):
            return "UNARY_UNARY"
        case (False, True):
            return "UNARY_STREAM"
        case (True, False):
            return "STREAM_UNARY"
        case _:
            return "STREAM_STREAM"


_IDEMPOTENCY = {
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: "IDEMPOTENCY_UNKNOWN",
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: "NO_SIDE_EFFECTS",
    descriptor_pb2.MethodOptions.IDEMPOTENT: "IDEMPOTENT",
}


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


# protoc enforces these; a request that breaks them did not come from protoc
# (or protoc has a bug), and we say so instead of emitting broken Python.
_PROTO_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_FROM_PROTOC = "(protoc never sends this; is the CodeGeneratorRequest hand-made?)"


def _check_identifier(kind: str, name: str, where: str) -> None:
    if not _PROTO_IDENTIFIER.fullmatch(name):
        raise GenerationError(
            f"{where}: {kind} name {name!r} is not a proto identifier {_NOT_FROM_PROTOC}"
        )


def _check_module(proto_file: str, where: str) -> None:
    """The ``_pb2`` module of ``proto_file`` must be importable by name."""
    module = naming.module_name(proto_file)
    if not (proto_file.endswith(".proto") and naming.is_dotted_identifier(module)):
        raise GenerationError(
            f"{where}: proto file name {proto_file!r} does not map to an importable Python"
            f" module (got {module!r}); name .proto files with letters, digits, '_', '-'"
            " and '/' only, no Python keywords as path parts"
        )


def check_file(file: descriptor_pb2.FileDescriptorProto) -> None:
    """Reject names protoc would never produce; ``GenerationError`` names what is wrong."""
    _check_module(file.name, repr(file.name))
    where = file.name
    for part in file.package.split(".") if file.package else ():
        _check_identifier("package", part, where)
    services: set[str] = set()
    for service in file.service:
        _check_identifier("service", service.name, where)
        if service.name in services:
            raise GenerationError(
                f"{where}: service {service.name} is defined twice {_NOT_FROM_PROTOC}"
            )
        services.add(service.name)
        rpcs: set[str] = set()
        for method in service.method:
            _check_identifier("rpc", method.name, f"{where}: service {service.name}")
            if method.name in rpcs:
                raise GenerationError(
                    f"{where}: service {service.name}: rpc {method.name} is defined twice"
                    f" {_NOT_FROM_PROTOC}"
                )
            rpcs.add(method.name)


def _resolve(index: TypeIndex, type_name: str, where: str) -> MessageRef:
    ref = index.get(type_name)
    if ref is None:
        shown = type_name if type_name.isprintable() else repr(type_name)
        raise GenerationError(f"{where}: message type {shown or '(empty)'} is not in the request")
    _check_module(ref.proto_file, where)
    for part in ref.python_name.split("."):
        _check_identifier("message", part, f"{where}: type {type_name}")
        if keyword.iskeyword(part):
            raise GenerationError(
                f"{where}: message {type_name} cannot be named from Python ({part!r} is a"
                " Python keyword, which protobuf's Python code cannot use as a class name)"
            )
    return ref


def build_file_model(
    file: descriptor_pb2.FileDescriptorProto,
    index: TypeIndex,
    options: PluginOptions,
    version: str,
) -> FileModel:
    """The view model of one proto file; raises ``GenerationError`` naming the file."""
    check_file(file)
    locations = {tuple(loc.path): loc for loc in file.source_code_info.location}
    top = naming.Namespace(MODULE_RESERVED)
    prefix = f"{file.package}." if file.package else ""

    # Resolve every referenced message first: imports and aliases are fixed names.
    imports: dict[str, ImportModel] = {}
    for service in file.service:
        for method in service.method:
            where = f"{file.name}: rpc {prefix}{service.name}.{method.name}"
            for type_name in (method.input_type, method.output_type):
                ref = _resolve(index, type_name, where)
                imports.setdefault(
                    ref.alias, ImportModel(naming.module_name(ref.proto_file), ref.alias)
                )
    for alias in imports:
        top.reserve(alias)

    # Public names first, in priority order, so a clash renames the least used
    # name: service tables, then async clients, servicers, sync clients. Private
    # method constants come last.
    services = list(file.service)
    constants = [top.claim(f"{naming.upper_snake_case(s.name)}_SERVICE") for s in services]
    clients = [top.claim(f"{s.name}Client") for s in services]
    servicers = [top.claim(f"{s.name}Servicer") for s in services]
    sync_clients = [top.claim(f"{s.name}SyncClient") for s in services]

    service_models: list[ServiceModel] = []
    for s_index, service in enumerate(services):
        full_name = prefix + service.name
        client_ns = naming.Namespace(CLIENT_RESERVED)
        handler_ns = naming.Namespace(SERVICER_RESERVED)
        service_deprecated = service.options.deprecated
        try:
            default_policy = policy.service_policy(
                service.options, file=file.name, service=full_name
            )
        except policy.PolicyError as exc:
            raise GenerationError(str(exc)) from exc
        methods: list[MethodModel] = []
        for m_index, method in enumerate(service.method):
            where = f"{file.name}: rpc {full_name}.{method.name}"
            idempotency = _IDEMPOTENCY.get(method.options.idempotency_level, "IDEMPOTENCY_UNKNOWN")
            try:
                method_policy = policy.method_policy(
                    method.options,
                    default_policy,
                    file=file.name,
                    service=full_name,
                    rpc=method.name,
                    idempotency=idempotency,
                )
            except policy.PolicyError as exc:
                raise GenerationError(str(exc)) from exc
            request = _resolve(index, method.input_type, where)
            response = _resolve(index, method.output_type, where)
            deprecated = method.options.deprecated or service_deprecated
            doc = _comments(locations, (_FILE_SERVICE, s_index, _SERVICE_METHOD, m_index))
            deprecation = ""
            if deprecated:
                marked = "rpc" if method.options.deprecated else "service"
                deprecation = (
                    f"{full_name}.{method.name} is deprecated: its {marked} is marked"
                    f" deprecated in {file.name}"
                )
            methods.append(
                MethodModel(
                    name=method.name,
                    kind=_kind(method),
                    client_name=_client_method_name(client_ns, method.name),
                    handler_name=handler_ns.claim(method.name),
                    constant=top.claim(
                        f"_{naming.upper_snake_case(service.name)}_"
                        f"{naming.upper_snake_case(method.name).lstrip('_')}"
                    ),
                    request_type=request.expression,
                    response_type=response.expression,
                    idempotency=idempotency,
                    deprecation=deprecation,
                    doc=doc or f"Call ``/{full_name}/{method.name}``.",
                    path=f"/{full_name}/{method.name}",
                    policy=policy.keyword_literals(method_policy),
                )
            )
        doc = _comments(locations, (_FILE_SERVICE, s_index))
        service_models.append(
            ServiceModel(
                name=service.name,
                full_name=full_name,
                constant=constants[s_index],
                client_class=clients[s_index],
                sync_client_class=sync_clients[s_index],
                servicer_class=servicers[s_index],
                doc=doc or f"The ``{full_name}`` service.",
                methods=tuple(methods),
            )
        )

    exports: list[str] = []
    for model in service_models:
        exports.append(model.constant)
    for model in service_models:
        if options.async_client:
            exports.append(model.client_class)
        if options.sync_client:
            exports.append(model.sync_client_class)
        if options.server:
            exports.append(model.servicer_class)
    exports.append("SERVICES")
    if options.server:
        exports += ["serve", "start_server"]

    return FileModel(
        proto_file=file.name,
        output_file=naming.output_filename(file.name),
        version=version,
        runtime_import=naming.import_statement(options.runtime_module, "_lf"),
        imports=tuple(sorted(imports.values(), key=lambda i: (i.module, i.alias))),
        services=tuple(service_models),
        options=options,
        exports=tuple(exports),
    )


def files_to_generate(
    files: Sequence[descriptor_pb2.FileDescriptorProto], names: Iterable[str]
) -> list[descriptor_pb2.FileDescriptorProto]:
    """The requested files that define at least one service, in request order."""
    by_name = {f.name: f for f in files}
    result = []
    for name in names:
        if name not in by_name:
            raise GenerationError(f"{name}: listed in file_to_generate but not in proto_file")
        if by_name[name].service:
            result.append(by_name[name])
    return result

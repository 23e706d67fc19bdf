"""Reading the request's descriptors: message types, comments, and what protoc guarantees.

``build_type_index`` maps every message of the request to where its Python
class lives; ``check_file`` and ``resolve`` reject what protoc would never send
(a hand-made or fuzzed CodeGeneratorRequest) with a ``GenerationError`` that
names the file, instead of emitting broken Python.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from protoc_gen_localfirst.codegen import naming


class GenerationError(Exception):
    """The proto cannot be turned into Python; the message names the file."""


# SourceCodeInfo paths: FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2.
FILE_SERVICE = descriptor_pb2.FileDescriptorProto.SERVICE_FIELD_NUMBER
SERVICE_METHOD = descriptor_pb2.ServiceDescriptorProto.METHOD_FIELD_NUMBER


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


Locations = Mapping[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location]


def locations(
    file: descriptor_pb2.FileDescriptorProto,
) -> dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location]:
    """SourceCodeInfo locations by path, for ``comments``."""
    return {tuple(loc.path): loc for loc in file.source_code_info.location}


def clean_comment(text: str) -> str:
    """Comment text from SourceCodeInfo without the space after ``//``, trailing
    whitespace or surrounding blank lines."""
    lines = [line.rstrip() for line in text.splitlines()]
    return textwrap.dedent("\n".join(lines)).strip("\n")


def comments(where: Locations, path: tuple[int, ...]) -> str:
    """The leading and trailing comments at ``path``, or ``""``."""
    location = where.get(path)
    if location is None:
        return ""
    parts = [clean_comment(location.leading_comments), clean_comment(location.trailing_comments)]
    return "\n\n".join(part for part in parts if part)


def kind(method: descriptor_pb2.MethodDescriptorProto) -> str:
    """The ``MethodKind`` member name of ``method``."""
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


def idempotency(method: descriptor_pb2.MethodDescriptorProto) -> str:
    """The ``Idempotency`` member name of ``method``."""
    return _IDEMPOTENCY.get(method.options.idempotency_level, "IDEMPOTENCY_UNKNOWN")


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


def _check_unique(seen: set[str], name: str, what: str) -> None:
    if name in seen:
        raise GenerationError(f"{what} is defined twice {_NOT_FROM_PROTOC}")
    seen.add(name)


def check_file(file: descriptor_pb2.FileDescriptorProto) -> None:
    """Reject names protoc would never produce; ``GenerationError`` names what is wrong."""
    _check_module(file.name, repr(file.name))
    where = file.name
    for part in file.package.split(".") if file.package else ():
        _check_identifier("package", part, where)
    services: set[str] = set()
    for service in file.service:
        _check_identifier("service", service.name, where)
        _check_unique(services, service.name, f"{where}: service {service.name}")
        rpcs: set[str] = set()
        for method in service.method:
            _check_identifier("rpc", method.name, f"{where}: service {service.name}")
            _check_unique(rpcs, method.name, f"{where}: service {service.name}: rpc {method.name}")


def resolve(index: TypeIndex, type_name: str, where: str) -> MessageRef:
    """The message ``type_name`` refers to; ``GenerationError`` if Python cannot name it."""
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

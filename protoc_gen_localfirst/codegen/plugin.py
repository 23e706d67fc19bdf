"""The protoc plugin: CodeGeneratorRequest on stdin -> CodeGeneratorResponse on stdout.

protoc runs ``protoc-gen-localfirst`` for ``--localfirst_out=DIR`` and passes
``--localfirst_opt=...`` as the request's ``parameter``. For every requested
``foo/bar.proto`` that defines a service we emit ``foo/bar_localfirst.py``
(next to protoc's ``foo/bar_pb2.py``); files without services produce nothing.

Errors: a bad option, an unresolvable type or a plugin bug is reported through
``CodeGeneratorResponse.error``, which protoc prints prefixed with
``--localfirst_out:`` before exiting non-zero. Input that is not a
CodeGeneratorRequest at all (someone ran the plugin by hand) is reported on
stderr with exit status 2, since there is no protoc to show a response to.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from protoc_gen_localfirst import __version__, commands
from protoc_gen_localfirst.codegen.descriptors import (
    GenerationError,
    build_type_index,
    files_to_generate,
)
from protoc_gen_localfirst.codegen.model import build_file_model
from protoc_gen_localfirst.codegen.options import PluginOptionError, parse_options
from protoc_gen_localfirst.codegen.policy import OPTIONS_PROTO
from protoc_gen_localfirst.codegen.render import RenderError, render_file

NAME = "protoc-gen-localfirst"

SUPPORTED_FEATURES = (
    plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    | plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS
)
# The plugin reads only names, comments and MethodOptions, whose meaning no
# edition up to 2024 changes.
MINIMUM_EDITION = descriptor_pb2.EDITION_PROTO2
MAXIMUM_EDITION = descriptor_pb2.EDITION_2024

USAGE = f"""\
{NAME} {__version__}: a protoc plugin; protoc runs it, you normally do not.

    python -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen \\
        --localfirst_out=gen [--localfirst_opt=key=value,...] protos/foo.proto

Options: async_client, sync_client, server (true|false), runtime_module (dotted name).
Call policy options in .proto files: import "localfirst/options.proto" and add
-I"$(python -m protoc_gen_localfirst include-path)".

{commands.help_text(NAME)}"""


def generate(
    request: plugin_pb2.CodeGeneratorRequest, *, utf8_checked: bool = False
) -> plugin_pb2.CodeGeneratorResponse:
    """Build the response for ``request``; never raises for bad input.

    ``utf8_checked``: ``read_request`` already looked at every string (the walk
    costs as much as rendering a dozen files, so it is done once).
    """
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=SUPPORTED_FEATURES,
        minimum_edition=MINIMUM_EDITION,
        maximum_edition=MAXIMUM_EDITION,
    )
    current = "<options>"
    bad_string = None if utf8_checked else invalid_utf8_field(request)
    if bad_string is not None:
        _fail(response, f"{NAME}: the request's {bad_string} is not valid UTF-8")
        return response
    try:
        options = parse_options(request.parameter)
        index = build_type_index(request.proto_file)
        for file in files_to_generate(request.proto_file, request.file_to_generate):
            current = file.name
            model = build_file_model(file, index, options, __version__)
            response.file.add(name=model.output_file, content=render_file(model))
    except PluginOptionError as exc:
        _fail(response, f"{NAME}: invalid --localfirst_opt: {exc}")
    except (GenerationError, RenderError) as exc:
        _fail(response, f"{NAME}: {exc}")
    except Exception:  # noqa: BLE001 - a plugin bug: report it through protoc, with the traceback
        _fail(
            response,
            f"{NAME} {__version__}: internal error while generating {current}; please report"
            f" it with the .proto file\n{traceback.format_exc()}",
        )
    return response


OPTIONS_MODULE = "localfirst.options_pb2"
"""What protoc's ``_pb2.py`` of a proto importing ``OPTIONS_PROTO`` imports."""


def files_importing_options(request: plugin_pb2.CodeGeneratorRequest) -> list[str]:
    """Requested files whose ``_pb2.py`` will import ``localfirst.options_pb2``.

    Empty when ``OPTIONS_PROTO`` is requested too: then ``--python_out``
    writes ``localfirst/options_pb2.py`` next to them.
    """
    requested = set(request.file_to_generate)
    if OPTIONS_PROTO in requested:
        return []
    return [
        f.name for f in request.proto_file if f.name in requested and OPTIONS_PROTO in f.dependency
    ]


def options_import_warning(files: Sequence[str]) -> str:
    """What to tell a user whose ``_pb2.py`` will fail with ``No module named 'localfirst'``."""
    names = ", ".join(files)
    return (
        f"{NAME}: warning: {names} import{'s' if len(files) == 1 else ''} {OPTIONS_PROTO}, so"
        f" protoc's _pb2.py will run 'from localfirst import options_pb2', and this Python"
        f" cannot import {OPTIONS_MODULE} (No module named 'localfirst'). Add {OPTIONS_PROTO}"
        f" to this protoc command so --python_out writes localfirst/options_pb2.py too"
        f' (protoc -I"$(python -m protoc_gen_localfirst include-path)" ... {OPTIONS_PROTO}'
        f" {files[0]}), or install a protoc-gen-localfirst that ships it where your code runs\n"
    )


def options_module_importable() -> bool:
    """Whether ``localfirst.options_pb2`` can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(OPTIONS_MODULE) is not None
    except (ImportError, ValueError):
        return False


def _fail(response: plugin_pb2.CodeGeneratorResponse, message: str) -> None:
    del response.file[:]
    response.error = message


def invalid_utf8_field(message: Message, path: str = "") -> str | None:
    """The path of the first string field that is not valid UTF-8, or None.

    descriptor.proto and plugin.proto are proto2, whose parser does not check
    UTF-8; protobuf then hands out ``bytes`` where ``str`` is promised. A quick
    walk without paths first (a request holds tens of thousands of fields);
    the path is worked out only when something is wrong.
    """
    if _all_utf8(message):
        return None
    return _first_invalid(message, path)


_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _all_utf8(message: Message) -> bool:
    for field, value in message.ListFields():
        kind = field.type
        if kind == _STRING:
            if isinstance(value, bytes):
                return False
            if not isinstance(value, str) and any(isinstance(v, bytes) for v in value):
                return False
        elif kind == _MESSAGE:
            if isinstance(value, Message):
                if not _all_utf8(value):
                    return False
            elif not all(_all_utf8(item) for item in value):
                return False
    return True


def _first_invalid(message: Message, path: str) -> str | None:
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        # Repeated fields hold containers (``label`` is gone in protobuf 7,
        # ``is_repeated`` is missing before 5.28).
        repeated = not isinstance(value, (str, bytes, int, float, Message))
        values = list(value) if repeated else [value]
        for i, item in enumerate(values):
            where = f"{name}[{i}]" if repeated else name
            if field.type == FieldDescriptor.TYPE_STRING and not isinstance(item, str):
                return where
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _first_invalid(item, where)
                if found is not None:
                    return found
    return None


def read_request(data: bytes) -> plugin_pb2.CodeGeneratorRequest:
    """Parse stdin; ``ValueError`` with a user-facing message if it is not a request."""
    request = plugin_pb2.CodeGeneratorRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"stdin is not a CodeGeneratorRequest ({exc})") from exc
    if not request.file_to_generate:
        raise ValueError("stdin is not a CodeGeneratorRequest (it names no file to generate)")
    bad_string = invalid_utf8_field(request)
    if bad_string is not None:
        raise ValueError(f"stdin is not a CodeGeneratorRequest ({bad_string} is not valid UTF-8)")
    known = {f.name for f in request.proto_file}
    missing = [name for name in request.file_to_generate if name not in known]
    if missing:
        raise ValueError(
            "stdin is not a CodeGeneratorRequest (file_to_generate "
            f"{', '.join(missing)} has no descriptor)"
        )
    return request


def main(
    argv: Sequence[str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the ``protoc-gen-localfirst`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = sys.stdout.buffer if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr

    code = commands.run(args)
    if code is not None:
        return code
    if "--version" in args:
        stdout.write(f"{NAME} {__version__}\n".encode())
        return 0
    if "--help" in args or "-h" in args:
        stderr.write(USAGE)
        return 0
    if args:
        stderr.write(f"{NAME}: unexpected arguments: {' '.join(args)}\n\n{USAGE}")
        return 2
    if stdin.isatty():  # run by hand: protoc always pipes a request
        stderr.write(USAGE)
        return 2
    try:
        request = read_request(stdin.read())
    except ValueError as exc:
        stderr.write(f"{NAME}: {exc}; run me through protoc (see --help)\n")
        return 2
    stdout.write(generate(request, utf8_checked=True).SerializeToString())
    stdout.flush()
    importing = files_importing_options(request)
    if importing and not options_module_importable():
        stderr.write(options_import_warning(importing))
    return 0


if __name__ == "__main__":
    sys.exit(main())

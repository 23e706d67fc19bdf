"""Bad input never crashes the plugin (issue 5, "Bad input").

The plugin is fed random bytes and random but structurally valid
CodeGeneratorRequests that protoc would never send: dangling and empty type
references, empty, duplicate and non-ASCII names, deep nesting, services
without methods, odd comments, garbage and random call-policy options, odd
parameters. Whatever comes in, the answer is either Python that parses, or a
``CodeGeneratorResponse.error`` that says what is wrong, never an uncaught
exception, a traceback or an "internal error" (a failure we did not foresee).
"""

from __future__ import annotations

import ast
import io
import keyword
import os
import struct
from typing import Any

from google.protobuf import descriptor_pb2, duration_pb2
from google.protobuf.compiler import plugin_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoc_gen_localfirst.codegen import plugin

# A few seconds in the suite; PLUGIN_FUZZ_EXAMPLES=5000 for a longer hunt.
FAST = settings(
    max_examples=int(os.environ.get("PLUGIN_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# Names: mostly plausible identifiers from a tiny alphabet (so duplicates and
# collisions are common), plus keywords, empty strings and arbitrary unicode.
def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` nine times in ten (``one_of`` would pick each branch equally)."""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda c: common if c else rare)


_ident = st.from_regex(r"[A-Da-d_][A-Da-d_09]{0,5}", fullmatch=True)
_weird = st.one_of(
    st.sampled_from(["", "None", "from", "class", "SERVICES", "_", "__init__", "Ünï", "a.b"]),
    st.sampled_from(sorted(keyword.kwlist)),
    st.text(max_size=8),
)
# Mostly valid, so that many examples get as far as rendering Python.
NAMES = mostly(_ident, _weird)
COMMENTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(['"""', "\\", '\\"""', "\x00\r\n\t", "\u2028\ud7ff", "'''", "{{ x }}"]),
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


@st.composite
def call_policies(draw: st.DrawFn) -> bytes:
    """A serialized CallPolicy: mostly sensible values, sometimes invalid, or garbage."""
    if not draw(mostly(st.just(True), st.just(False))):
        return draw(st.binary(max_size=12))
    out = b""
    if draw(st.booleans()):
        out += b"\x08" + _varint(draw(mostly(st.integers(1, 6), st.integers(0, 2**32 - 1))))
    for number in (2, 3, 6, 7):
        if draw(st.booleans()):
            duration = duration_pb2.Duration(
                seconds=draw(mostly(st.integers(0, 5), st.integers(-(2**40), 2**40))),
                nanos=draw(mostly(st.integers(1, 999_999_999), st.integers(-(2**31), 2**31 - 1))),
            )
            out += _ld(number, duration.SerializeToString())
    if draw(st.booleans()):
        value = draw(mostly(st.floats(1, 4), st.floats(allow_nan=True, allow_infinity=True)))
        out += b"\x21" + struct.pack("<d", value)
    codes = mostly(
        st.sampled_from(["UNAVAILABLE", "ABORTED", "RESOURCE_EXHAUSTED"]),
        st.one_of(st.sampled_from(["OK", "unavailable", ""]), st.text(max_size=5)),
    )
    for code in draw(st.lists(codes, max_size=3)):
        out += _ld(5, code.encode("utf-8", "surrogatepass"))
    return out


@st.composite
def options_bytes(draw: st.DrawFn, extension: int) -> bytes:
    out = b""
    if draw(st.booleans()):
        out += b"\x90\x02" + _varint(draw(st.integers(0, 5)))  # idempotency_level (34)
    if draw(st.booleans()):
        out += b"\x88\x02" + _varint(draw(st.integers(0, 1)))  # deprecated (33)
    if draw(mostly(st.just(False), st.just(True))):
        out += _ld(extension, draw(call_policies()))
    return out


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=draw(NAMES))
    if depth < 6:
        for nested in draw(st.lists(messages(depth + 1), max_size=2 if depth < 2 else 1)):
            message.nested_type.append(nested)
    return message


def _full_names(messages_: list[descriptor_pb2.DescriptorProto], scope: str) -> list[str]:
    names = []
    for message in messages_:
        full = f"{scope}.{message.name}"
        names.append(full)
        names += _full_names(list(message.nested_type), full)
    return names


@st.composite
def files(draw: st.DrawFn, known: list[str]) -> bytes:
    """One FileDescriptorProto, serialized (options are appended as raw bytes)."""
    package = draw(st.one_of(st.just(""), st.lists(NAMES, min_size=1, max_size=3).map(".".join)))
    if draw(st.booleans()):
        package = draw(st.sampled_from(["", "p", "p.v1"]))
    name = draw(
        mostly(
            st.sampled_from(["a/b.proto", "x-y.proto", "c/d/e.proto"]),
            st.one_of(NAMES.map(lambda n: f"{n}.proto"), st.text(max_size=10)),
        )
    )
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package)
    file.syntax = draw(st.sampled_from(["proto3", "proto2", "", "editions", "nonsense"]))
    for message in draw(st.lists(messages(), max_size=3)):
        file.message_type.append(message)
    scope = f".{package}" if package else ""
    local = _full_names(list(file.message_type), scope)
    valid = st.sampled_from(local + known) if local + known else st.just(".missing.T")
    types = mostly(
        valid,
        st.one_of(
            st.sampled_from(["", ".", "no.dot", ".missing.T", ".google.protobuf.Empty"]),
            st.text(max_size=6),
        ),
    )
    service_blobs = []
    for s_index in range(draw(st.sampled_from([1, 1, 1, 2, 3, 0]))):
        service = descriptor_pb2.ServiceDescriptorProto(name=draw(NAMES))
        blob = service.SerializeToString()
        for _ in range(draw(st.sampled_from([1, 2, 3, 4, 0]))):
            method = descriptor_pb2.MethodDescriptorProto(
                name=draw(NAMES),
                input_type=draw(types),
                output_type=draw(types),
                client_streaming=draw(st.booleans()),
                server_streaming=draw(st.booleans()),
            )
            blob += _ld(2, method.SerializeToString() + _ld(4, draw(options_bytes(51730))))
        blob += _ld(3, draw(options_bytes(51731)))
        service_blobs.append(blob)
        for m_index in range(3):
            location = file.source_code_info.location.add()
            location.path.extend(
                draw(st.sampled_from([[6, s_index], [6, s_index, 2, m_index], [4, 0]]))
            )
            location.leading_comments = draw(COMMENTS)
            location.trailing_comments = draw(COMMENTS)
    return file.SerializeToString() + b"".join(_ld(6, blob) for blob in service_blobs)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    shared = descriptor_pb2.FileDescriptorProto(name="shared.proto", package="shared")
    shared.message_type.add(name="T").nested_type.add(name="U")
    known = [".shared.T", ".shared.T.U"]
    blobs = [shared.SerializeToString()] + draw(st.lists(files(known), min_size=1, max_size=3))
    parsed = []
    for blob in blobs:
        try:
            parsed.append(descriptor_pb2.FileDescriptorProto.FromString(blob).name)
        except Exception:  # noqa: BLE001 - the file's name is only used to pick targets
            parsed.append("")
    targets = draw(st.lists(st.sampled_from(parsed[1:]), min_size=1, max_size=3))
    if draw(mostly(st.just(False), st.just(True))):
        targets.append(draw(st.sampled_from(["not-there.proto", "shared.proto", ""])))
    parameter = draw(
        mostly(
            st.sampled_from(["", "server=false", "async_client=false,sync_client", ",,"]),
            st.one_of(st.sampled_from(["sync_client=maybe", "runtime_module=1x"]), st.text()),
        )
    )
    head = plugin_pb2.CodeGeneratorRequest(file_to_generate=targets, parameter=parameter)
    return head.SerializeToString() + b"".join(_ld(15, blob) for blob in blobs)


def _run(data: bytes) -> tuple[int, bytes, str]:
    stdout, stderr = io.BytesIO(), io.StringIO()
    code = plugin.main([], stdin=io.BytesIO(data), stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def _check(data: bytes) -> None:
    code, out, err = _run(data)
    assert "Traceback" not in err
    if code == 2:
        assert out == b""
        assert err.startswith("protoc-gen-localfirst: stdin is not a CodeGeneratorRequest")
        return
    assert code == 0, err
    assert err == ""
    response = plugin_pb2.CodeGeneratorResponse.FromString(out)
    if response.HasField("error"):
        assert response.error.startswith("protoc-gen-localfirst"), response.error
        assert "internal error" not in response.error, response.error
        assert "Traceback" not in response.error, response.error
        assert list(response.file) == []
        return
    for file in response.file:
        assert file.name.endswith("_localfirst.py")
        ast.parse(file.content, filename=file.name)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@FAST
@given(requests())
def test_malformed_requests(data: bytes) -> None:
    _check(data)


@FAST
@given(requests(), st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_corrupted_requests(data: bytes, position: int, junk: bytes) -> None:
    """A structurally valid request with a few bytes overwritten."""
    position %= max(len(data), 1)
    _check(data[:position] + junk + data[position + len(junk) :])

"""Names and literals: snake_case, escaping, grpc's aliases, docstring literals."""

from __future__ import annotations

import ast
import keyword

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protoc_gen_localfirst.codegen import naming
from protoc_gen_localfirst.codegen.literals import docstring_literal


@pytest.mark.parametrize(
    ("rpc", "snake"),
    [
        ("SayHello", "say_hello"),
        ("GetHTTPStatus", "get_http_status"),
        ("HTTPStatus", "http_status"),
        ("Get2FA", "get2_fa"),
        ("V2Api", "v2_api"),
        ("Get_Foo", "get_foo"),
        ("get_foo", "get_foo"),
        ("From", "from"),
        ("_UnaryUnary", "_unary_unary"),
        ("A", "a"),
        ("ABC", "abc"),
    ],
)
def test_snake_case(rpc: str, snake: str) -> None:
    assert naming.snake_case(rpc) == snake


def test_namespace_escapes_keywords_reserved_and_taken() -> None:
    ns = naming.Namespace({"close", "_unary_unary"})
    assert [ns.claim(n) for n in ("from", "close", "get_foo", "get_foo", "from_", "none")] == [
        "from_",
        "close_",
        "get_foo",
        "get_foo_",
        "from__",
        "none",
    ]
    with pytest.raises(ValueError, match="not a Python identifier"):
        ns.claim("a-b")


identifiers = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z")


@given(st.lists(identifiers, max_size=30), st.sets(identifiers, max_size=10))
def test_namespace_is_injective_and_safe(wanted: list[str], reserved: set[str]) -> None:
    ns = naming.Namespace(reserved)
    claimed = [ns.claim(n) for n in wanted]
    assert len(set(claimed)) == len(claimed)
    for want, got in zip(wanted, claimed, strict=True):
        assert got.isidentifier() and not keyword.iskeyword(got)
        assert got not in reserved
        assert got.rstrip("_") == want.rstrip("_") and got.startswith(want)


@pytest.mark.parametrize(
    ("proto", "module", "alias", "statement"),
    [
        (
            "greeter/v1/greeter.proto",
            "greeter.v1.greeter_pb2",
            "greeter_dot_v1_dot_greeter__pb2",
            "from greeter.v1 import greeter_pb2 as greeter_dot_v1_dot_greeter__pb2",
        ),
        ("x.proto", "x_pb2", "x__pb2", "import x_pb2 as x__pb2"),
        (
            "google/protobuf/timestamp.proto",
            "google.protobuf.timestamp_pb2",
            "google_dot_protobuf_dot_timestamp__pb2",
            "from google.protobuf import timestamp_pb2 as google_dot_protobuf_dot_timestamp__pb2",
        ),
        ("a/b-c.proto", "a.b_c_pb2", "a_dot_b__c__pb2", "from a import b_c_pb2 as a_dot_b__c__pb2"),
    ],
)
def test_module_alias_like_grpc(proto: str, module: str, alias: str, statement: str) -> None:
    assert naming.module_name(proto) == module
    assert naming.module_alias(proto) == alias
    assert naming.import_statement(module, alias) == statement


def test_output_filename() -> None:
    assert naming.output_filename("greeter/v1/greeter.proto") == "greeter/v1/greeter_localfirst.py"
    assert (
        naming.output_filename("edge/top_level-name.proto") == "edge/top_level_name_localfirst.py"
    )


@given(st.text())
@example('"""')
@example('ends with a quote"')
@example('""""')
@example("back\\slash\\")
@example("\\N{BULLET} \\x41 \\u1234")
@example("tab\tcr\rnul\x00 ls\u2028 del\x7f")
@example("\ud800 lone surrogate")
def test_docstring_literal_round_trips(text: str) -> None:
    literal = docstring_literal(text)
    assert literal.startswith('"""') and literal.endswith('"""')
    assert ast.literal_eval(literal) == text
    # The literal is valid inside a function body too (what the templates emit),
    # and the source is encodable as UTF-8.
    indented = docstring_literal(text, "    ")
    source = f"def f():\n    {indented}\n"
    source.encode("utf-8")
    value = ast.get_docstring(ast.parse(source).body[0], clean=False)  # type: ignore[arg-type]
    assert value is not None
    lines = value.split("\n")
    if len(lines) > 1:
        assert lines[-1] == "    "
        lines = lines[:-1]
    restored = [lines[0]] + [line.removeprefix("    ") for line in lines[1:]]
    assert "\n".join(restored) == text


def test_docstring_literal_stays_readable() -> None:
    assert docstring_literal('a "quoted" word') == '"""a "quoted" word"""'
    assert docstring_literal("two\nlines", "    ") == '"""two\n    lines\n    """'
    assert docstring_literal("x\n\ny", "  ") == '"""x\n\n  y\n  """'

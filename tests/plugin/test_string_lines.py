"""Literals in generated code: one quote style, long strings split into adjacent literals."""

from __future__ import annotations

import ast

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protoc_gen_localfirst.codegen.literals import literal, string_literal, string_pieces


def _source(text: str, indent: int, width: int = 100) -> str:
    pieces = string_pieces(text, indent, width)
    return ("\n" + " " * indent).join(string_literal(piece) for piece in pieces)


@given(st.text(max_size=400), st.integers(min_value=0, max_value=40))
def test_pieces_evaluate_back_to_the_text(text: str, indent: int) -> None:
    assert ast.literal_eval("(" + _source(text, indent) + ")") == text


def test_lines_fit_the_width_when_words_allow() -> None:
    text = "greeter.v1.Greeter.SayHelloV0 is deprecated: its rpc is marked deprecated in x.proto"
    lines = _source(text * 2, 12, width=60).split("\n")
    assert len(lines) > 1
    assert all(len(line) <= 60 for line in lines)


@given(st.text())
@example("it's")
@example('say "hi"')
@example("back\\slash\nnewline\ttab\x00\u2028\ud800")
def test_string_literal_is_double_quoted_and_round_trips(text: str) -> None:
    source = string_literal(text)
    assert source.startswith('"') and source.endswith('"')
    assert ast.literal_eval(source) == text
    assert "\n" not in source


@pytest.mark.parametrize(
    ("value", "source"),
    [
        (None, "None"),
        (True, "True"),
        (4, "4"),
        (0.5, "0.5"),
        ("x", '"x"'),
        (("UNAVAILABLE",), '("UNAVAILABLE",)'),
        (("A", "B"), '("A", "B")'),
    ],
)
def test_literal(value: object, source: str) -> None:
    assert literal(value) == source
    assert ast.literal_eval(source) == value

"""Long string literals in generated code are split into adjacent literals that fit."""

from __future__ import annotations

import ast

from hypothesis import given
from hypothesis import strategies as st

from protoc_gen_localfirst.render import _string_lines_filter


@given(st.text(max_size=400), st.integers(min_value=0, max_value=40))
def test_pieces_evaluate_back_to_the_text(text: str, indent: int) -> None:
    source = _string_lines_filter(text, indent)
    assert ast.literal_eval("(" + source + ")") == text


def test_lines_fit_the_width_when_words_allow() -> None:
    text = "greeter.v1.Greeter.SayHelloV0 is deprecated: its rpc is marked deprecated in x.proto"
    lines = _string_lines_filter(text * 2, 12, width=60).split("\n")
    assert len(lines) > 1
    assert all(len(line) <= 60 for line in lines)

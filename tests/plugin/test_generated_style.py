"""What generated modules look like: one quote style, no default-valued arguments,
each service's default call policy written once, lines within 100 columns."""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
from pathlib import Path

import pytest

from protoc_gen_localfirst import __version__
from protoc_gen_localfirst.schema import Idempotency, MethodInfo

from .conftest import GENERATED

MODULES = sorted(GENERATED.rglob("*_localfirst.py"))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls to ``_lf.<name>(...)``."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "_lf"
    ]


def _value(node: ast.expr) -> object:
    """A keyword argument's value where it can be known without importing (else the node)."""
    if isinstance(node, ast.Attribute) and ast.unparse(node).startswith("_lf.Idempotency."):
        return Idempotency[node.attr]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return node


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_one_quote_style(path: Path) -> None:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    strings = [t.string for t in tokens if t.type == tokenize.STRING]
    assert strings
    assert [s for s in strings if not s.startswith('"')] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_lines_fit_100_columns(path: Path) -> None:
    assert [line for line in path.read_text().splitlines() if len(line) > 100] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_argument_equals_its_default(path: Path) -> None:
    tree = ast.parse(path.read_text())
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(MethodInfo)
        if f.default is not dataclasses.MISSING
    }
    infos = _calls(tree, "MethodInfo")
    assert infos
    for call in infos:
        given = {k.arg: _value(k.value) for k in call.keywords}
        for name, value in given.items():
            assert name is not None
            if name in defaults:
                assert value != defaults[name], (ast.unparse(call), name)
        assert given.get("handler_name") != given["name"], ast.unparse(call)
        policy = next((k.value for k in call.keywords if k.arg == "policy"), None)
        if isinstance(policy, ast.Call):  # _lf.MethodPolicy(...) or _X_POLICY.replace(...)
            assert policy.keywords, ast.unparse(call)
    for call in _calls(tree, "MethodPolicy"):
        assert call.keywords and all(_value(k.value) is not None for k in call.keywords)


def test_service_default_policy_written_once() -> None:
    source = (GENERATED / "greeter/v1/greeter_localfirst.py").read_text()
    assert source.count("max_backoff=0.5") == 1
    assert source.count("policy=_GREETER_POLICY,") == 5
    assert source.count("policy=_GREETER_POLICY.replace(") == 2


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_records_the_generator_version(path: Path) -> None:
    source = path.read_text()
    assert f'\nGENERATOR_VERSION = "{__version__}"\n' in source
    assert "\n_lf.require_runtime(GENERATOR_VERSION, api=1)\n" in source

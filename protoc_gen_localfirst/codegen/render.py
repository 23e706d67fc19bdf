"""View models -> Python source, through jinja2 templates.

Templates are looked up in the installed package first
(``protoc_gen_localfirst/templates``: the wheel ships the repository's top-level
``templates/`` there) and then in the repository's ``templates/`` (editable
installs). The environment uses ``StrictUndefined`` so a misspelt field is an
error, not an empty string, and every rendered module is checked with
``ast.parse``: output that is not Python is a plugin bug and is reported as
such, naming the proto file.

Templates print; every decision and every width is in the view model.
Literals are never pasted between quotes in templates: strings go through
``pystr`` and docstrings through ``docstring(indent)`` (``literals``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import jinja2

from protoc_gen_localfirst.codegen.literals import docstring_literal, string_literal
from protoc_gen_localfirst.codegen.model import FileModel

TEMPLATE = "module.py.jinja"

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""``protoc_gen_localfirst/``: the installed templates sit in it, the repository's next to it."""


def template_dirs() -> list[Path]:
    """Candidate template directories, installed package first."""
    return [_PACKAGE_DIR / "templates", _PACKAGE_DIR.parent / "templates"]


def find_template_dir() -> Path:
    for candidate in template_dirs():
        if (candidate / TEMPLATE).is_file():
            return candidate
    searched = ", ".join(str(p) for p in template_dirs())
    raise RenderError(f"templates not found (searched {searched}); the installation is broken")


class RenderError(Exception):
    """The plugin produced something that is not valid Python (a plugin bug)."""


def _docstring_filter(text: str, indent: int) -> str:
    return docstring_literal(text, " " * indent)


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(find_template_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # we emit Python, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pystr"] = string_literal
    env.filters["docstring"] = _docstring_filter
    return env


def render_file(model: FileModel) -> str:
    """Render one generated module and check that it parses."""
    source = environment().get_template(TEMPLATE).render(file=model)
    try:
        ast.parse(source, filename=model.output_file)
    except SyntaxError as exc:
        raise RenderError(
            f"{model.proto_file}: protoc-gen-localfirst produced invalid Python for "
            f"{model.output_file} (line {exc.lineno}: {exc.msg}); this is a plugin bug, "
            "please report it with the .proto file"
        ) from exc
    return source

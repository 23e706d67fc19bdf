"""View models -> Python source, through jinja2 templates.

Templates are looked up in the installed package first
(``protoc_gen_localfirst/templates``: the wheel ships the repository's top-level
``templates/`` there) and then in the repository's ``templates/`` (editable
installs). The environment uses ``StrictUndefined`` so a misspelt field is an
error, not an empty string.

Output is Python by construction, not by a check at run time: every name is a
validated identifier, every string goes through ``literals`` (property-tested
to round-trip), and the tests parse every module the plugin writes, including
thousands of fuzzed requests (``tests/plugin/test_fuzz.py``). Parsing each
module in the plugin as well cost a third of its run time (``bench/plugin.py``).

Templates print; every decision and every width is in the view model.
Literals are never pasted between quotes in templates: strings go through
``pystr`` and docstrings through ``docstring(indent)`` (``literals``).
"""

from __future__ import annotations

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
    """The templates cannot be found or loaded (a broken installation)."""


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
    """Render one generated module."""
    return environment().get_template(TEMPLATE).render(file=model)

"""View models -> Python source, through jinja2 templates.

Templates are looked up in the installed package first
(``protoc_gen_localfirst/templates``: the wheel ships the repository's top-level
``templates/`` there) and then in the repository's ``templates/`` (editable
installs). The environment uses ``StrictUndefined`` so a misspelt field is an
error, not an empty string, and every rendered module is checked with
``ast.parse``: output that is not Python is a plugin bug and is reported as
such, naming the proto file.

Literals are never pasted between quotes in templates: strings go through
``pyrepr`` (``repr``) and docstrings through ``docstring_literal``.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from pathlib import Path

import jinja2

from protoc_gen_localfirst.model import FileModel

TEMPLATE = "module.py.jinja"

_PACKAGE_DIR = Path(__file__).resolve().parent


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


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\r": "\\r"}


def _escape_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char == "\n" or char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def docstring_literal(text: str, indent: str = "") -> str:
    """A triple-quoted string literal whose value is ``text``.

    Backslashes and non-printable characters (except newlines) are escaped;
    a ``"`` is escaped when it touches another ``"`` or ends the text, so no
    ``\"\"\"`` can close the literal early and normal prose stays readable.
    Lines after the first are prefixed with ``indent`` unless blank (the
    docstring convention; ``inspect.cleandoc`` removes it again).
    """
    out: list[str] = []
    for i, char in enumerate(text):
        if char == '"':
            before = text[i - 1] if i else ""
            after = text[i + 1] if i + 1 < len(text) else ""
            if before == '"' or after in ('"', ""):
                out.append('\\"')
                continue
        out.append(_escape_char(char))
    body = "".join(out)
    if indent:
        body = "\n".join(
            (indent + line) if (n and line) else line for n, line in enumerate(body.split("\n"))
        )
        if "\n" in body:
            body += "\n" + indent
    return f'"""{body}"""'


def _docstring_filter(text: str, width: int) -> str:
    return docstring_literal(text, " " * width)


def _wrap_filter(text: str, width: int) -> str:
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _string_lines_filter(text: str, indent: int, width: int = 100) -> str:
    """``text`` as adjacent string literals (implicit concatenation), one per line.

    Lines are split after spaces so each stays within ``width`` when indented
    by ``indent``; a single word longer than that stays whole. Each piece is
    emitted with ``repr``, so any text is a valid literal.
    """
    room = width - indent
    pieces: list[str] = []
    current = ""
    for word in re.split(r"(?<= )", text):
        if current and len(repr(current + word)) > room:
            pieces.append(current)
            current = word
        else:
            current += word
    pieces.append(current)
    return ("\n" + " " * indent).join(repr(piece) for piece in pieces)


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
    env.filters["pyrepr"] = repr
    env.filters["docstring"] = _docstring_filter
    env.filters["wrap"] = _wrap_filter
    env.filters["string_lines"] = _string_lines_filter
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

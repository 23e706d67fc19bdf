"""Python literals for generated code, in one quote style (double quotes).

Every string the generator writes into code goes through here, never between
quotes pasted in a template: ``string_literal`` for ordinary strings,
``docstring_literal`` for docstrings, ``literal`` for the plain values of a
call policy, ``string_pieces`` to split a long string over lines.
"""

from __future__ import annotations

import re

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


def _plain(text: str) -> bool:
    """Nothing in ``text`` (newlines aside) needs escaping: the common case, checked in C."""
    return '"' not in text and "\\" not in text and text.replace("\n", " ").isprintable()


def string_literal(text: str) -> str:
    """A double-quoted literal whose value is ``text`` (``repr`` with ``"`` quotes)."""
    if "\n" not in text and _plain(text):
        return f'"{text}"'
    body = "".join(
        "\\n" if char == "\n" else '\\"' if char == '"' else _escape_char(char) for char in text
    )
    return f'"{body}"'


def literal(value: object) -> str:
    """Source for ``value``: None, bool, int, float, str or a tuple of those."""
    if isinstance(value, str):
        return string_literal(value)
    if isinstance(value, tuple):
        items = [literal(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"no literal for {type(value).__name__} {value!r}")


def docstring_literal(text: str, indent: str = "") -> str:
    """A triple-quoted string literal whose value is ``text``.

    Backslashes and non-printable characters (except newlines) are escaped;
    a ``"`` is escaped when it touches another ``"`` or ends the text, so no
    ``\"\"\"`` can close the literal early and normal prose stays readable.
    Lines after the first are prefixed with ``indent`` unless blank (the
    docstring convention; ``inspect.cleandoc`` removes it again).
    """
    if _plain(text):
        return _indented(text, indent)
    out: list[str] = []
    for i, char in enumerate(text):
        if char == '"':
            before = text[i - 1] if i else ""
            after = text[i + 1] if i + 1 < len(text) else ""
            if before == '"' or after in ('"', ""):
                out.append('\\"')
                continue
        out.append(_escape_char(char))
    return _indented("".join(out), indent)


def _indented(body: str, indent: str) -> str:
    """``body`` (already escaped) between triple quotes, later lines indented."""
    if indent and "\n" in body:
        body = "\n".join(
            (indent + line) if (n and line) else line for n, line in enumerate(body.split("\n"))
        )
        body += "\n" + indent
    return f'"""{body}"""'


def string_pieces(text: str, indent: int, width: int) -> tuple[str, ...]:
    """``text`` cut into pieces whose literals fit ``width`` when indented by ``indent``.

    Printed one per line, the literals concatenate back to ``text`` (adjacent
    string literals). Cuts fall after spaces; a single word longer than the
    room stays whole.
    """
    room = width - indent
    pieces: list[str] = []
    current = ""
    for word in re.split(r"(?<= )", text):
        if current and len(string_literal(current + word)) > room:
            pieces.append(current)
            current = word
        else:
            current += word
    pieces.append(current)
    return tuple(pieces)

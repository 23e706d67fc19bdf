"""Griffe extension: the runtime's ``name: description`` docstring lines as lists.

The runtime's docstrings describe options as plain text::

    host: address to listen on, default "[::]".
        more about host
    port: TCP port, default 50051.

Markdown would run such lines together into one paragraph (and Google-style
parsing would take an indented block for an admonition). This turns every
run of them into a Markdown list, ``- `host`: address ...``, for the API
reference only; the source stays as it is.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_DEFINITION = re.compile(r"^([a-z_][a-z0-9_]*): (\S.*)$")


def definitions_as_lists(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    in_list = False
    for line in lines:
        match = _DEFINITION.match(line)
        if match:
            if not in_list and out and out[-1].strip():
                out.append("")  # Markdown needs a blank line before a list
            out.append(f"- `{match.group(1)}`: {match.group(2)}")
            in_list = True
        elif in_list and line.startswith("    "):
            out.append(line)
        else:
            if in_list and line.strip():
                out.append("")
            in_list = False
            out.append(line)
    return "\n".join(out)


class DefinitionLists(griffe.Extension):
    """Rewrites docstrings as they are loaded (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = definitions_as_lists(obj.docstring.value)

"""The subcommands of ``python -m protoc_gen_localfirst`` (and of ``protoc-gen-localfirst``).

A subcommand is a first argument found in ``SUBCOMMANDS``; adding one is one
entry there and one line in ``SUMMARIES`` (``--help`` lists them; a test
checks both tables name the same commands).

Subcommands are named by ``module:function`` and imported only when chosen:
``endpoints`` lives in the runtime (it resolves a target the way clients do),
and the plugin must not pay for importing grpc, DNS and asyncio at every run.
Standard library only: the plugin imports this module for its ``--help``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

Subcommand = Callable[[Sequence[str]], int]
"""Takes the arguments after the subcommand name, returns the exit code."""

SUBCOMMANDS: dict[str, str] = {
    "endpoints": "protoc_gen_localfirst.runtime.diagnose:endpoints_command",
    "include-path": "protoc_gen_localfirst.codegen.policy:include_path_command",
}
"""Subcommand name -> ``module:function`` of a ``Subcommand``."""

SUMMARIES: dict[str, tuple[str, str]] = {
    "endpoints": ("TARGET", "show the endpoints a client sees for TARGET and their order"),
    "include-path": ("", "print the -I directory that holds localfirst/options.proto"),
}
"""Subcommand name -> (its arguments, the one line ``--help`` shows for it)."""

FLAGS: dict[str, str] = {
    "--help": "this text",
    "--version": "print the version",
}
"""The plugin's own flags, listed with the subcommands."""


def load(spec: str) -> Subcommand:
    """Import ``module:function`` and return the function."""
    module, _, name = spec.partition(":")
    command: Subcommand = getattr(importlib.import_module(module), name)
    return command


def run(args: Sequence[str]) -> int | None:
    """Run the subcommand ``args`` starts with; None if it starts with none."""
    if args and args[0] in SUBCOMMANDS:
        return load(SUBCOMMANDS[args[0]])(args[1:])
    return None


def help_text(program: str) -> str:
    """The ``Commands`` section of ``--help``: one line per flag and subcommand."""
    rows = [*FLAGS.items()]
    rows += [(f"{name} {args}".rstrip(), text) for name, (args, text) in SUMMARIES.items()]
    width = max(len(usage) for usage, _ in rows)
    lines = "".join(f"  {usage:<{width}}  {text}\n" for usage, text in rows)
    return f"Commands ({program} COMMAND, or python -m protoc_gen_localfirst COMMAND):\n{lines}"

"""``python -m protoc_gen_localfirst``: the protoc plugin, plus subcommands.

With no subcommand this is the plugin itself, so
``--plugin=protoc-gen-localfirst=...`` may point at a wrapper running
``python -m protoc_gen_localfirst``. A subcommand is a first argument found in
``SUBCOMMANDS``; adding one is one entry there.

Subcommands are named by ``module:function`` and imported only when chosen:
``endpoints`` lives in the runtime (it resolves a target the way clients do),
and the plugin must not pay for importing grpc, DNS and asyncio at every run.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

Subcommand = Callable[[Sequence[str]], int]
"""Takes the arguments after the subcommand name, returns the exit code."""

SUBCOMMANDS: dict[str, str] = {
    "endpoints": "protoc_gen_localfirst.runtime.diagnose:endpoints_command",
    "include-path": "protoc_gen_localfirst.codegen.policy:include_path_command",
}
"""Subcommand name -> ``module:function`` of a ``Subcommand``."""

PLUGIN = "protoc_gen_localfirst.codegen.plugin:main"


def load(spec: str) -> Subcommand:
    """Import ``module:function`` and return the function."""
    module, _, name = spec.partition(":")
    command: Subcommand = getattr(importlib.import_module(module), name)
    return command


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return load(SUBCOMMANDS[args[0]])(args[1:])
    return load(PLUGIN)(args)


if __name__ == "__main__":
    sys.exit(main())

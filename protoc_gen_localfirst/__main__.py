"""``python -m protoc_gen_localfirst``: the protoc plugin, plus subcommands.

With no subcommand this is the plugin itself, so
``--plugin=protoc-gen-localfirst=...`` may point at a wrapper running
``python -m protoc_gen_localfirst``. A subcommand is a first argument found in
``SUBCOMMANDS``; adding one (e.g. ``endpoints``) is one entry there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from protoc_gen_localfirst import plugin
from protoc_gen_localfirst.policy import include_path_command
from protoc_gen_localfirst.runtime.diagnose import endpoints_command

Subcommand = Callable[[Sequence[str]], int]
"""Takes the arguments after the subcommand name, returns the exit code."""

SUBCOMMANDS: dict[str, Subcommand] = {
    "endpoints": endpoints_command,
    "include-path": include_path_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:])
    return plugin.main(args)


if __name__ == "__main__":
    sys.exit(main())

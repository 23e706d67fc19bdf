"""``python -m protoc_gen_localfirst``: the protoc plugin, plus subcommands.

With no subcommand this is the plugin itself, so
``--plugin=protoc-gen-localfirst=...`` may point at a wrapper running
``python -m protoc_gen_localfirst``. The subcommands (``endpoints``,
``include-path``) are listed in ``commands``; ``--help`` shows them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from protoc_gen_localfirst.commands import SUBCOMMANDS, Subcommand, load, run

__all__ = ["PLUGIN", "SUBCOMMANDS", "Subcommand", "load", "main"]

PLUGIN = "protoc_gen_localfirst.codegen.plugin:main"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    code = run(args)
    return load(PLUGIN)(args) if code is None else code


if __name__ == "__main__":
    sys.exit(main())

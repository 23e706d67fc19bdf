"""Runs ``serve()`` for the SIGTERM tests: python -m tests.server.serve_script HOST DRAIN_DELAY.

Run from the repository root (``-m`` puts it on ``sys.path``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from protoc_gen_localfirst.runtime.server.bootstrap import bind_servicers, serve
from tests.server.conftest import ECHO_SERVICE, Echo


async def main(host: str, drain_delay: float) -> None:
    await serve(
        bind_servicers([ECHO_SERVICE], [Echo()]),
        host=host,
        port=0,
        node="script-node",
        drain_delay=drain_delay,
        grace=5.0,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))

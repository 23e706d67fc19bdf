"""Runs the generated Greeter's ``serve()`` with no logging configuration (or the user's).

python -m tests.server.default_logging_script [unconfigured|configured]
(from the repository root, with generated/ on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from greeter.v1 import greeter_localfirst as gen


class Greeter(gen.GreeterServicer):
    async def say_hello(self, request: Any, context: Any) -> Any:  # misnamed on purpose
        return None


if __name__ == "__main__":
    if sys.argv[1] == "configured":
        logging.basicConfig(level=logging.INFO, format="USER %(levelname)s %(name)s %(message)s")
    asyncio.run(gen.serve(Greeter(), host="127.0.0.1", port=0, node="script-node", drain_delay=0))

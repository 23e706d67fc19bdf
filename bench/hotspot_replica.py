"""A Greeter replica of limited capacity, for bench/hotspot.py.

    python -m bench.hotspot_replica --host 127.0.0.201 --port 50051 --node node-a --name a1 \\
        --executions-file a1.log [--concurrency 4] [--work-ms 20] [--serve-option KEY=VALUE ...]

``SayHello`` holds an ``asyncio.Semaphore(concurrency)`` around
``asyncio.sleep(work)``: 4 x 20 ms serves at most 200 calls/s, about 175/s
with the event loop's overhead. Calls beyond that wait for the semaphore (a
queue inside the server, as in a real overloaded replica); a call whose
deadline passes while waiting is cancelled by grpc and never runs.

Each SayHello appends ``> NAME`` to ``--executions-file`` when it gets a
slot (work started) and ``NAME`` when its work is done, before the reply
(executed), each with one O_APPEND write, so the counts survive SIGKILL and
the harness can attribute server-side work to windows, workers and scheduled
times. Started minus executed is work cut short: grpc cancels a handler whose
call's deadline passes, also in the middle of its work. ``WhoAmI`` (inherited from demo.replica) names node and
replica and does not take the semaphore.

``--serve-option KEY=VALUE`` (repeatable) goes into ``serve(**options)``
unchanged; an option ``serve`` does not know makes the process exit at start
with the error (the harness shows the log). Values are Python literals
(``0.5``, ``None``, ``True``, ``"x"``), a call of a public name of
``protoc_gen_localfirst.runtime`` (``RetryPolicy(max_attempts=2)``), or else
the plain string.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import logging
import os
import re
from typing import Any

_CALL = re.compile(r"^[A-Za-z_][\w.]*\(.*\)$", re.DOTALL)


def parse_value(text: str) -> Any:
    """``KEY=VALUE``'s value: a literal, a runtime constructor call, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if _CALL.match(text):
        from protoc_gen_localfirst import runtime

        namespace = {name: getattr(runtime, name) for name in runtime.__all__}
        return eval(text, {"__builtins__": {}}, namespace)  # the operator's own flag
    return text


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: parse_value(v)}``; a malformed or repeated item is an error."""
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE with KEY a Python identifier")
        if key in options:
            raise SystemExit(f"{flag} {key} given twice")
        try:
            options[key] = parse_value(value)
        except Exception as error:  # reported with the flag
            raise SystemExit(f"{flag} {item!r}: cannot evaluate the value: {error!r}") from error
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--executions-file", required=True)
    parser.add_argument("--concurrency", type=int, default=4, help="SayHello calls working at once")
    parser.add_argument("--work-ms", type=float, default=20.0, help="time one SayHello works")
    parser.add_argument("--serve-option", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[{args.name}] %(message)s")

    # Imported after parsing: the generated package comes from PYTHONPATH.
    from greeter.v1.greeter_localfirst import serve
    from greeter.v1.greeter_pb2 import HelloReply, HelloRequest

    from demo.replica import Greeter
    from protoc_gen_localfirst.runtime import ServicerContext

    work = args.work_ms / 1000
    executions = os.open(args.executions_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    class LimitedGreeter(Greeter):
        """demo.replica's Greeter whose SayHello has a fixed capacity."""

        def __init__(self) -> None:
            super().__init__(args.node, args.name)
            self.slots = asyncio.Semaphore(args.concurrency)

        async def SayHello(
            self, request: HelloRequest, context: ServicerContext[HelloRequest, HelloReply]
        ) -> HelloReply:
            async with self.slots:
                os.write(executions, f"> {request.name}\n".encode())
                await asyncio.sleep(work)
            os.write(executions, f"{request.name}\n".encode())
            return self._reply(request.name)

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "node": args.node,
        "drain_delay": 0.2,
        "grace": 1.0,
    }
    options.update(parse_options(args.serve_option, "--serve-option"))

    async def run() -> None:
        await serve(LimitedGreeter(), **options)

    asyncio.run(run())


if __name__ == "__main__":
    main()

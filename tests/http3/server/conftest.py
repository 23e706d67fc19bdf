"""Fixtures: a Greeter served over HTTP/2 + HTTP/3 on 127.0.0.1, TLS files, buf."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from greeter.v1.greeter_localfirst import start_server

from protoc_gen_localfirst.runtime.server.bootstrap import Server
from tests.http3.server.servicer import EchoGreeter
from tests.support.certs import TlsFiles, tls_files  # noqa: F401 - the session fixture

REPO = Path(__file__).resolve().parents[3]
BUF = REPO / "node_modules" / ".bin" / "buf"
# The whole protos/ directory: greeter.proto imports localfirst/options.proto,
# which buf resolves only when the schema is the include root.
SCHEMA = REPO / "protos"
NODE = "h3-node"
GREETER = "/greeter.v1.Greeter/"


@dataclass
class Served:
    server: Server
    servicer: EchoGreeter
    tls: TlsFiles

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, method: str) -> str:
        return f"https://127.0.0.1:{self.port}{GREETER}{method}"


async def serve(tls: TlsFiles, **options: Any) -> Served:
    servicer = EchoGreeter()
    server = await start_server(
        servicer,
        host="127.0.0.1",
        port=0,
        node=NODE,
        http3=True,
        certfile=str(tls.cert),
        keyfile=str(tls.key),
        drain_delay=0,
        **options,
    )
    return Served(server, servicer, tls)


@pytest.fixture
async def served(tls_files: TlsFiles) -> AsyncIterator[Served]:  # noqa: F811
    result = await serve(tls_files)
    yield result
    await result.server.stop(0)


@dataclass
class BufResult:
    returncode: int
    stdout: str
    stderr: str


def buf_path() -> str:
    if not BUF.exists() and shutil.which("buf") is None:
        pytest.fail(f"buf not found at {BUF}: run `npm ci` in {REPO} (installs @bufbuild/buf)")
    return str(BUF) if BUF.exists() else str(shutil.which("buf"))


async def buf_curl(
    served: Served, method: str, *args: str, stdin: bytes | None = None
) -> BufResult:
    """``buf curl --http3 --protocol grpc`` against ``served``; exit code and output."""
    process = await asyncio.create_subprocess_exec(
        buf_path(),
        "curl",
        "--http3",
        "--protocol",
        "grpc",
        "--cacert",
        str(served.tls.ca),
        "--schema",
        str(SCHEMA),
        *args,
        served.url(method),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return BufResult(process.returncode, out.decode(), err.decode())

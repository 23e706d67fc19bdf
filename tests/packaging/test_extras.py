"""Without an extra's library, the feature that needs it says which extra to install.

A fresh interpreter runs with the library's import blocked (a meta path
finder that refuses it), the way an install without the extra behaves;
tests/packaging/test_install.py checks the same in a real venv without qh3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.certs import make_tls_files

REPO = Path(__file__).resolve().parents[2]

BLOCK = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())
"""

CLIENT = """
from protoc_gen_localfirst.runtime import AsyncClient, SyncClient
SyncClient("static:///127.0.0.1:1", probe_nodes=False).close()  # HTTP/2 needs no QUIC
try:
    AsyncClient("static:///127.0.0.1:1", transport={transport!r}, tls=True)
except ModuleNotFoundError as error:
    print(error.name, "|", error)
"""

SERVER = """
import asyncio
from protoc_gen_localfirst.runtime.server.options import check_options
check_options({{"port": 0}})
try:
    check_options({{"http3": True, "certfile": "x.pem", "keyfile": "x.key"{extra}}})
except ModuleNotFoundError as error:
    print(error.name, "|", error)
except ValueError as error:  # the files do not exist: the library check came later
    print("ValueError", "|", error)
"""


def _run(code: str, blocked: set[str]) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "generated")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=blocked) + code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("transport", ["h3", "auto"])
def test_client_http3_without_qh3_names_the_extra(transport: str) -> None:
    out = _run(CLIENT.format(transport=transport), {"qh3"})
    assert out == (
        f"qh3 | transport={transport!r} needs the QUIC library qh3, which is not installed: "
        "pip install 'protoc-gen-localfirst[http3]'"
    )


def test_server_http3_without_qh3_names_the_extra(tmp_path: Path) -> None:
    out = _run(SERVER.format(extra=""), {"qh3"})
    assert out.startswith("ValueError |"), out  # checked after the files: they come first
    tls = make_tls_files(tmp_path)
    code = SERVER.replace('"x.pem"', repr(str(tls.cert))).replace('"x.key"', repr(str(tls.key)))
    assert _run(code.format(extra=""), {"qh3"}) == (
        "qh3 | http3=True needs the QUIC library qh3, which is not installed: "
        "pip install 'protoc-gen-localfirst[http3]'"
    )
    assert _run(code.format(extra=', "quic_library": "aioquic"'), {"aioquic"}) == (
        "aioquic | http3=True needs the QUIC library aioquic, which is not installed: "
        "pip install aioquic"
    )
    # With the library present, the same options pass.
    assert _run(code.format(extra=""), set()) == ""


def test_runtime_and_generated_code_import_without_qh3() -> None:
    out = _run(
        "import sys, protoc_gen_localfirst.runtime, greeter.v1.greeter_localfirst\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'qh3', 'aioquic'}))",
        {"qh3", "aioquic"},
    )
    assert out == "[]"

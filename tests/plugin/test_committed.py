"""The committed generated/ is fresh, and it passes mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import GENERATED, REPO

PACKAGE_INCLUDE = REPO / "protoc_gen_localfirst" / "include"

STALE = "generated/ is stale: run scripts/generate.sh and commit the result"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_is_fresh(tmp_path: Path) -> None:
    """generated/ and the package's copy of localfirst/options.proto (the .proto
    users put on -I, and the descriptor set the plugin reads options with)."""
    out, include = tmp_path / "generated", tmp_path / "include"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        [str(REPO / "scripts/generate.sh"), str(out), str(include)],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    for fresh_root, committed_root in [(out, GENERATED), (include, PACKAGE_INCLUDE)]:
        fresh, committed = _tree(fresh_root), _tree(committed_root)
        assert sorted(fresh) == sorted(committed), STALE
        changed = [name for name in fresh if fresh[name] != committed[name]]
        assert changed == [], f"{STALE} (differs: {', '.join(changed)})"
    assert sorted(_tree(include)) == ["localfirst/options.binpb", "localfirst/options.proto"]


def _mypy(files: list[Path], cache: Path, target: str = "3.11") -> subprocess.CompletedProcess[str]:
    """mypy --strict on ``files`` with generated/ as the import root.

    generated/ has no ``__init__.py`` files (protoc writes none), so the
    packages are namespace packages rooted at generated/: ``MYPYPATH`` plus
    ``--explicit-package-bases``. The ``_pb2.pyi`` stubs come from protoc's
    ``--pyi_out`` and are not ours to fix (a bare ``Mapping``, module-level
    ``ClassVar`` for extensions), so they are followed for types but not
    reported: ``--follow-imports=silent`` (every module of ours is named on the
    command line, so none is hidden). docs/typed-messages.md gives users a
    per-module override instead.
    """
    env = {**os.environ, "MYPYPATH": str(GENERATED)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--explicit-package-bases",
            "--follow-imports=silent",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(cache),
            "--python-version",
            target,
            *map(str, files),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


GOOD_USE = """
from __future__ import annotations
from collections.abc import AsyncIterator
from greeter.v1.greeter_localfirst import GreeterClient, GreeterServicer, GreeterSyncClient, serve
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest
from protoc_gen_localfirst import runtime as lf


class Greeter(GreeterServicer):
    async def SayHello(
        self, request: HelloRequest, context: lf.ServicerContext[HelloRequest, HelloReply]
    ) -> HelloReply:
        return HelloReply(message=f"hi {request.name}")

    async def LotsOfReplies(
        self, request: HelloRequest, context: lf.ServicerContext[HelloRequest, HelloReply]
    ) -> AsyncIterator[HelloReply]:
        yield HelloReply(message="hi")


async def main() -> None:
    async with GreeterClient("static:///127.0.0.1:1") as client:
        reply: HelloReply = await client.say_hello(HelloRequest(name="x"), timeout=1.0)
        async for r in client.lots_of_replies(HelloRequest(name="x")):
            print(r.node, reply.replica)
        await client.lots_of_greetings([HelloRequest()])
    with GreeterSyncClient("static:///127.0.0.1:1") as sync:
        for s in sync.bidi_hello(iter([HelloRequest()])):
            print(s.message)
    await serve(Greeter(), host="127.0.0.1", port=0)
"""

BAD_USE = """
from greeter.v1.greeter_localfirst import GreeterClient, serve
from greeter.v1.greeter_pb2 import HelloReply, HelloRequest, WhoAmIRequest


async def main(client: GreeterClient) -> None:
    await client.say_hello(WhoAmIRequest())
    reply: WhoAmIRequest = await client.who_am_i(WhoAmIRequest())
    await client.say_hello(HelloRequest(), 2.0)
    await serve(port="50051")
"""


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


TARGETS = sorted({"3.11", f"{sys.version_info[0]}.{sys.version_info[1]}"})
"""The oldest supported Python and the one running the tests (scripts/test.sh
runs this file on 3.12 and 3.13 too)."""


@pytest.mark.parametrize("target", TARGETS)
def test_generated_passes_mypy_strict(mypy_cache: Path, tmp_path: Path, target: str) -> None:
    ours = sorted(GENERATED.rglob("*_localfirst.py"))
    assert len(ours) == 5
    use = tmp_path / "good_use.py"
    use.write_text(GOOD_USE)
    result = _mypy([*ours, use], mypy_cache, target)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_types_catch_misuse(mypy_cache: Path, tmp_path: Path) -> None:
    """The generated signatures are real types, not Any: misuse is reported."""
    use = tmp_path / "bad_use.py"
    use.write_text(BAD_USE)
    result = _mypy([use], mypy_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["7", "8", "9", "10"], result.stdout
    assert '"say_hello" of "GreeterClient" has incompatible type "WhoAmIRequest"' in result.stdout
    assert "Too many positional arguments" in result.stdout
    assert '"port"' in result.stdout

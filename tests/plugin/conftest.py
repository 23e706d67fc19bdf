"""Fixtures for the plugin tests: run protoc (grpc_tools' or Debian's) with the plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
GENERATED = REPO / "generated"
DEBIAN_PROTOC = Path("/usr/bin/protoc")

# The committed generated code is imported the way users (and the demo) do:
# with generated/ on sys.path (pytest's ``pythonpath``), as top-level packages
# greeter, billing, edge.


@dataclass(frozen=True)
class ProtocResult:
    returncode: int
    stdout: str
    stderr: str
    out: Path

    def files(self) -> dict[str, bytes]:
        """Every file protoc wrote, by path relative to the output directory."""
        return {
            p.relative_to(self.out).as_posix(): p.read_bytes()
            for p in sorted(self.out.rglob("*"))
            if p.is_file()
        }


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an executable ``protoc-gen-localfirst``.

    The console script installed next to this interpreter is used when there is
    one (that is what users run); otherwise a wrapper runs
    ``python -m protoc_gen_localfirst`` from this checkout.
    """
    directory = tmp_path_factory.mktemp("plugin-bin")
    script = Path(sys.executable).parent / "protoc-gen-localfirst"
    target = directory / "protoc-gen-localfirst"
    if script.exists():
        target.symlink_to(script)
    else:
        target.write_text(
            f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m protoc_gen_localfirst "$@"\n'
        )
        target.chmod(0o755)
    return directory


@pytest.fixture
def run_protoc(plugin_dir: Path, tmp_path: Path) -> Callable[..., ProtocResult]:
    """Run protoc over ``protos`` (paths relative to an include dir) into a fresh dir.

    ``compiler="grpc_tools"`` runs ``python -m grpc_tools.protoc`` with
    ``--plugin=``; ``compiler="debian"`` runs /usr/bin/protoc and finds the
    plugin on PATH, as a user with the package installed would.
    """
    counter = iter(range(1_000_000))

    def run(
        protos: Sequence[str],
        *,
        opts: Sequence[str] = (),
        include: Path = PROTOS,
        compiler: str = "grpc_tools",
        python_out: bool = True,
    ) -> ProtocResult:
        out = tmp_path / f"out{next(counter)}"
        out.mkdir()
        env = dict(os.environ)
        if compiler == "grpc_tools":
            argv = [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--plugin=protoc-gen-localfirst={plugin_dir / 'protoc-gen-localfirst'}",
            ]
        elif compiler == "debian":
            protoc = shutil.which("protoc", path="/usr/bin") if DEBIAN_PROTOC.exists() else None
            if protoc is None:
                pytest.fail(
                    f"{DEBIAN_PROTOC} is missing; this test checks the plugin with Debian's "
                    "protoc: apt-get install protobuf-compiler"
                )
            argv = [protoc]
            env["PATH"] = f"{plugin_dir}{os.pathsep}{env.get('PATH', '')}"
        else:
            raise ValueError(compiler)
        argv.append(f"-I{include}")
        if python_out:
            argv += [f"--python_out={out}", f"--pyi_out={out}"]
        argv.append(f"--localfirst_out={out}")
        argv += [f"--localfirst_opt={opt}" for opt in opts]
        argv += list(protos)
        proc = subprocess.run(
            argv, cwd=include, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        return ProtocResult(proc.returncode, proc.stdout, proc.stderr, out)

    return run

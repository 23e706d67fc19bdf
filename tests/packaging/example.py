"""The example user project examples/inventory/: generate its code, type-check and run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "inventory"
BUF = REPO / "node_modules" / ".bin" / "buf"
VENV_BIN = Path(sys.executable).parent

APP_OUTPUT = [
    "flour x5 in ZONE_COLD at F0 [adjusted=yes] counted=None",
    "milk x3 in ZONE_COLD at M0 [adjusted=yes] counted=None",
    "watch flour",
    "watch milk",
    "sync milk x3 in ZONE_COLD at M0 [adjusted=yes] counted=None",
]
"""What ``python inventory_app.py`` prints."""


def tool_bin(directory: Path) -> Path:
    """``protoc-gen-localfirst`` (this checkout's plugin) and ``python`` (this
    interpreter, which has grpc_tools) in ``directory``: what an activated venv
    puts on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    scripts = {
        "protoc-gen-localfirst": f'PYTHONPATH="{REPO}" exec "{sys.executable}" -m protoc_gen_localfirst',
        # not a symlink: a venv's python is known by the pyvenv.cfg beside the path run
        "python": f'exec "{sys.executable}"',
    }
    for name, command in scripts.items():
        (directory / name).write_text(f'#!/bin/sh\n{command} "$@"\n')
        (directory / name).chmod(0o755)
    return directory


def copy_example(tmp_path: Path) -> Path:
    project = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("gen", "__pycache__"))
    return project


def protoc(project: Path, out: Path, stubs: str, bin_dir: Path) -> None:
    """grpc_tools' protoc; ``stubs`` is ``pyi`` (protoc's) or ``mypy`` (mypy-protobuf's)."""
    out.mkdir(parents=True)
    plugins = [f"--plugin=protoc-gen-localfirst={bin_dir / 'protoc-gen-localfirst'}"]
    if stubs == "mypy":
        plugins.append(f"--plugin=protoc-gen-mypy={VENV_BIN / 'protoc-gen-mypy'}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            "-Ithird_party",
            *plugins,
            f"--python_out={out}",
            f"--{stubs}_out={out}",
            f"--localfirst_out={out}",
            "localfirst/options.proto",
            "inventory/v1/inventory.proto",
        ],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=120,
    )


def mypy(
    project: Path,
    gen: Path,
    cache: Path,
    *args: str,
    files: tuple[str, ...] = ("inventory_app.py",),
) -> subprocess.CompletedProcess[str]:
    """mypy on the project's code with ``gen`` as the import root, in this interpreter's
    Python version; the runtime is this checkout's (an installed one may be another)."""
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(gen), str(REPO)])}
    # One cache per configuration: mypy keeps a module's errors out of its cache
    # entry when ignore_errors hid them, and would not report them later.
    cache = cache / f"{gen.name}-{'-'.join(a.strip('-') for a in args)}"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(cache),
            *args,
            *files,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_app(project: Path, gen: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(gen)])}
    proc = subprocess.run(
        [sys.executable, "inventory_app.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()

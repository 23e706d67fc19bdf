"""docs/install.md, run as written.

Every fenced block after an ``<!-- install-test: FLOW -->`` marker is part of
FLOW; a flow's blocks run in order, in one bash shell (``set -euo pipefail``),
in a copy of this checkout, with no virtual environment active and ``python3``
the interpreter running the tests. ``new-shell`` in a marker starts a new
shell (the environment activated earlier is gone, as in a new terminal).
The test adds nothing to the commands but checks their results afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "install.md"
MARKER = re.compile(r"<!-- install-test: (\S+)( new-shell)? -->\n```sh\n(.*?)```", re.DOTALL)
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "node_modules",
    "__pycache__",
    "dist",
    "build",
    "*.egg-info",
    ".*_cache",
    "gen",
    ".hypothesis",
    ".demo",
)


def flows() -> dict[str, list[str]]:
    """FLOW -> the bash scripts to run in turn (one per shell)."""
    shells: dict[str, list[str]] = {}
    for flow, new_shell, body in MARKER.findall(DOC.read_text()):
        scripts = shells.setdefault(flow, [])
        if new_shell or not scripts:
            scripts.append("")
        scripts[-1] += body
    return shells


def test_the_doc_has_both_flows() -> None:
    found = flows()
    assert sorted(found) == ["checkout", "wheel"]
    assert 'pip install ".[tools]"' in found["checkout"][0]
    assert "--plugin=protoc-gen-localfirst=.venv/bin/protoc-gen-localfirst" in found["checkout"][1]


def test_the_wheel_name_is_this_version() -> None:
    version = re.search(
        r'__version__ = "(.+)"', (REPO / "protoc_gen_localfirst/__init__.py").read_text()
    )
    assert version
    assert f"protoc_gen_localfirst-{version[1]}-py3-none-any.whl" in DOC.read_text()


def test_the_extras_table_is_pyprojects() -> None:
    extras = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    table = set(re.findall(r"^\| `([a-z0-9]+)` \|", DOC.read_text(), re.MULTILINE))
    # otel arrives with the OpenTelemetry branch; until then the table is ahead of pyproject.
    assert table - extras <= {"otel"}
    assert extras <= table


def test_the_plugin_not_found_message_is_protocs(tmp_path: Path) -> None:
    """The error quoted in the doc is what protoc prints without the plugin on PATH."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO / 'protos'}",
            f"--localfirst_out={tmp_path}",
            "greeter/v1/greeter.proto",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    quoted = DOC.read_text().split("Without it, protoc\nsays:\n\n```\n")[1].split("```")[0]
    assert proc.stderr.strip() == quoted.strip()


def _shell_env(bin_dir: Path) -> dict[str, str]:
    """No venv active, ``python3`` is this interpreter (any venv of it makes a fresh one)."""
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(sys.prefix)]
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env["PATH"] = os.pathsep.join([str(bin_dir), *path])
    return env


def _run_flow(flow: str, tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=COPY_IGNORE, symlinks=True)
    env = _shell_env(tmp_path / "bin")
    for n, script in enumerate(flows()[flow]):
        proc = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, f"{flow} shell {n}:\n{script}\n{proc.stdout}\n{proc.stderr}"
        if n == 0:
            assert proc.stdout.strip().splitlines()[-1] == "GreeterClient", proc.stdout
    return checkout


def _installed_elsewhere(checkout: Path) -> None:
    """The venv runs the installed package (not the checkout's), without qh3."""
    python = checkout / ".venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import protoc_gen_localfirst as p, importlib.util as u;"
        "print(p.__file__);"
        "print(u.find_spec('qh3'), u.find_spec('kubernetes'), u.find_spec('grpc_tools') is not None)"
    )
    out = subprocess.run(
        [str(python), "-c", probe],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    where, found = out.stdout.splitlines()
    assert "site-packages" in where, where
    assert found == "None None True"
    # HTTP/3 without the http3 extra: the error names it.
    h3 = subprocess.run(
        [
            str(python),
            "-c",
            (
                "from protoc_gen_localfirst.runtime import AsyncClient;"
                "AsyncClient('static:///127.0.0.1:1', transport='auto', tls=True)"
            ),
        ],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert h3.returncode == 1
    assert h3.stderr.strip().splitlines()[-1] == (
        "ModuleNotFoundError: transport='auto' needs the QUIC library qh3, which is not installed: "
        "pip install 'protoc-gen-localfirst[http3]'"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_from_checkout(tmp_path: Path) -> None:
    checkout = _run_flow("checkout", tmp_path)
    _installed_elsewhere(checkout)
    assert (checkout / "gen-plugin/greeter/v1/greeter_localfirst.py").read_bytes() == (
        REPO / "generated/greeter/v1/greeter_localfirst.py"
    ).read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_from_wheel(tmp_path: Path) -> None:
    checkout = _run_flow("wheel", tmp_path)
    _installed_elsewhere(checkout)
    assert (checkout / "gen/greeter/v1/greeter_localfirst.py").read_bytes() == (
        REPO / "generated/greeter/v1/greeter_localfirst.py"
    ).read_bytes()

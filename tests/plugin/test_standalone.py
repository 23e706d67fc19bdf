"""The plugin stands apart: generating code never imports the runtime's world.

A fresh interpreter runs the plugin (``python -m protoc_gen_localfirst``'s
``main``) on a real CodeGeneratorRequest that protoc built for the example
protos, then lists what it imported. Code generation may use protobuf, jinja2
and ``protoc_gen_localfirst.schema``; never grpc, QUIC, tenacity, DNS,
Kubernetes, asyncio or the runtime package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from .conftest import PROTOS, REPO

FORBIDDEN = ("grpc", "grpc_health", "qh3", "aioquic", "tenacity", "dns", "kubernetes", "asyncio")

PROBE = """
import json, sys
from protoc_gen_localfirst.__main__ import main
code = main([])
sys.stdout.flush()
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in sys.argv[1].split(",")
    or name.startswith("protoc_gen_localfirst.runtime")
)
sys.stderr.write(json.dumps(loaded))
sys.exit(code)
"""


def _request(tmp_path: Path) -> plugin_pb2.CodeGeneratorRequest:
    """What protoc sends for greeter.proto (with its call-policy options) and billing.proto."""
    descriptor_set = tmp_path / "set.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={descriptor_set}",
            "greeter/v1/greeter.proto",
            "billing/v1/billing.proto",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["greeter/v1/greeter.proto", "billing/v1/billing.proto"]
    )
    request.proto_file.extend(files.file)
    return request


def test_plugin_run_imports_no_runtime_dependency(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN)],
        input=_request(tmp_path).SerializeToString(),
        capture_output=True,
        cwd=tmp_path,  # the installed package, as protoc runs it
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    response = plugin_pb2.CodeGeneratorResponse.FromString(proc.stdout)
    assert not response.error, response.error
    assert sorted(f.name for f in response.file) == [
        "billing/v1/billing_localfirst.py",
        "greeter/v1/greeter_localfirst.py",
    ]
    assert "policy=_GREETER_POLICY.replace(" in response.file[0].content + response.file[1].content
    assert json.loads(proc.stderr) == []


@pytest.mark.parametrize(
    "module",
    [
        "protoc_gen_localfirst.__main__",
        "protoc_gen_localfirst.codegen.plugin",  # the console script's entry
        "protoc_gen_localfirst.schema",
    ],
)
def test_plugin_modules_import_alone(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1].split(',')"
        " or m.startswith('protoc_gen_localfirst.runtime')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == "[]\n"


def test_schema_needs_nothing_outside_the_standard_library() -> None:
    """schema.py is shared by both worlds: at run time it imports only the standard library."""
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import protoc_gen_localfirst.schema\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout == "['protoc_gen_localfirst']\n"


PLUGIN_SIDE = [
    *sorted((REPO / "protoc_gen_localfirst" / "codegen").glob("*.py")),
    REPO / "protoc_gen_localfirst" / "schema.py",
    REPO / "protoc_gen_localfirst" / "__main__.py",
]


@pytest.mark.parametrize("path", PLUGIN_SIDE, ids=lambda p: p.name)
def test_plugin_modules_and_functions_stay_small(path: Path) -> None:
    """No plugin module over 600 lines, no function over 60."""
    source = path.read_text()
    assert len(source.splitlines()) <= 600
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []

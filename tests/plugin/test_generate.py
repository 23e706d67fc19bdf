"""Generation through both compilers, committed output, editions, grpc's import aliases."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import GENERATED, PROTOS, REPO, ProtocResult

# Debian's protoc 3.21 cannot read editions files; every other proto is proto2/proto3.
PROTO3_FILES = sorted(
    p.relative_to(PROTOS).as_posix()
    for p in PROTOS.rglob("*.proto")
    if 'edition = "' not in p.read_text()
)
ALL_FILES = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))


def _localfirst(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name.endswith("_localfirst.py")}


def _committed() -> dict[str, bytes]:
    return {
        p.relative_to(GENERATED).as_posix(): p.read_bytes()
        for p in sorted(GENERATED.rglob("*_localfirst.py"))
    }


def test_grpc_tools_output_matches_committed(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc(ALL_FILES, python_out=False)
    assert result.returncode == 0, result.stderr
    produced = _localfirst(result.files())
    assert sorted(produced) == [
        "billing/v1/billing_localfirst.py",
        "edge/editions_localfirst.py",
        "edge/keywords_localfirst.py",
        "edge/top_level_name_localfirst.py",
        "greeter/v1/greeter_localfirst.py",
    ]
    assert produced == _committed()


def test_debian_protoc_generates_the_same(run_protoc: Callable[..., ProtocResult]) -> None:
    """Debian's protoc 3.21 with the plugin found on PATH (no --plugin flag)."""
    assert "edge/editions.proto" not in PROTO3_FILES
    result = run_protoc(PROTO3_FILES, compiler="debian", python_out=False)
    assert result.returncode == 0, result.stderr
    produced = _localfirst(result.files())
    committed = {k: v for k, v in _committed().items() if k != "edge/editions_localfirst.py"}
    assert produced == committed


def test_debian_protoc_refuses_editions_with_a_clear_error(
    run_protoc: Callable[..., ProtocResult],
) -> None:
    result = run_protoc(["edge/editions.proto"], compiler="debian", python_out=False)
    assert result.returncode != 0
    assert "editions.proto" in result.stderr
    assert result.files() == {}


def test_editions_2023_with_grpc_tools(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc(["edge/editions.proto"])
    assert result.returncode == 0, result.stderr
    source = result.files()["edge/editions_localfirst.py"].decode()
    assert "kind=_lf.MethodKind.STREAM_STREAM" in source
    assert "idempotency=_lf.Idempotency.IDEMPOTENT" in source
    assert "from edge import editions_pb2 as edge_dot_editions__pb2" in source


def test_proto3_optional_is_accepted(run_protoc: Callable[..., ProtocResult]) -> None:
    """greeter.proto has ``optional int32 count``; protoc rejects plugins that do
    not declare FEATURE_PROTO3_OPTIONAL for such files."""
    assert "optional int32 count" in (PROTOS / "greeter/v1/greeter.proto").read_text()
    for compiler in ("grpc_tools", "debian"):
        result = run_protoc(["greeter/v1/greeter.proto"], compiler=compiler, python_out=False)
        assert result.returncode == 0, (compiler, result.stderr)
        assert "optional" not in result.stderr


def test_outputs_sit_next_to_pb2(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc(["edge/top_level-name.proto", "greeter/v1/greeter.proto"])
    assert result.returncode == 0, result.stderr
    names = set(result.files())
    assert {"edge/top_level_name_pb2.py", "edge/top_level_name_localfirst.py"} <= names
    assert {"greeter/v1/greeter_pb2.py", "greeter/v1/greeter_localfirst.py"} <= names


def test_imports_and_aliases_match_grpcs_plugin(tmp_path: Path) -> None:
    """Our ``_pb2`` imports are exactly the ones grpc's python plugin writes."""
    protos = ["billing/v1/billing.proto", "edge/top_level-name.proto"]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--grpc_python_out={tmp_path}"]
        + protos,
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    pattern = re.compile(r"^(?:from \S+ )?import \S+_pb2 as \S+$", re.MULTILINE)
    for proto, ours in [
        ("billing/v1/billing", GENERATED / "billing/v1/billing_localfirst.py"),
        ("edge/top_level_name", GENERATED / "edge/top_level_name_localfirst.py"),
    ]:
        grpc_imports = pattern.findall((tmp_path / f"{proto}_pb2_grpc.py").read_text())
        assert grpc_imports
        assert sorted(pattern.findall(ours.read_text())) == sorted(grpc_imports)


@pytest.mark.parametrize(
    ("proto", "line"),
    [
        (
            "billing/v1/billing_localfirst.py",
            "from google.protobuf import timestamp_pb2 as google_dot_protobuf_dot_timestamp__pb2",
        ),
        (
            "billing/v1/billing_localfirst.py",
            "from greeter.v1 import greeter_pb2 as greeter_dot_v1_dot_greeter__pb2",
        ),
        (
            "billing/v1/billing_localfirst.py",
            "    request_type=billing_dot_v1_dot_billing__pb2.Invoice.Line,",
        ),
        (
            "edge/top_level_name_localfirst.py",
            "from edge import messages_only_pb2 as edge_dot_messages__only__pb2",
        ),
        (
            "edge/top_level_name_localfirst.py",
            "from edge import top_level_name_pb2 as edge_dot_top__level__name__pb2",
        ),
    ],
)
def test_cross_package_and_well_known_types(proto: str, line: str) -> None:
    assert line in (GENERATED / proto).read_text()

"""The plugin process: --version, garbage on stdin, protoc errors, response.error paths."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from protoc_gen_localfirst import __version__, commands
from protoc_gen_localfirst.codegen import plugin

from .conftest import REPO, ProtocResult


def _run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "protoc_gen_localfirst", *args],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_version_from_console_script_and_module(plugin_dir: Path) -> None:
    expected = f"protoc-gen-localfirst {__version__}\n".encode()
    assert __version__ == "0.1.0"
    assert _run(["--version"]).stdout == expected
    script = subprocess.run(
        [str(plugin_dir / "protoc-gen-localfirst"), "--version"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert script.stdout == expected


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"hello, I am not protobuf\n", b""])
def test_garbage_on_stdin_exits_nonzero(garbage: bytes) -> None:
    proc = _run([], stdin=garbage)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert b"protoc-gen-localfirst: stdin is not a CodeGeneratorRequest" in proc.stderr
    assert b"run me through protoc" in proc.stderr


def test_unexpected_arguments_and_help() -> None:
    proc = _run(["--frobnicate"])
    assert proc.returncode == 2
    assert b"unexpected arguments: --frobnicate" in proc.stderr
    helped = _run(["--help"])
    assert helped.returncode == 0
    assert b"--localfirst_out=gen" in helped.stderr


def test_help_lists_every_subcommand_once(plugin_dir: Path) -> None:
    """``--help`` of the module and of the console script name each command on one line."""
    script = subprocess.run(
        [str(plugin_dir / "protoc-gen-localfirst"), "--help"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert commands.SUBCOMMANDS.keys() == commands.SUMMARIES.keys()
    for helped in (_run(["--help"]).stderr.decode(), script.stderr.decode()):
        section = helped.split("Commands (", 1)[1].splitlines()[1:]
        listed = [line.split()[0] for line in section if line.strip()]
        assert listed == ["--help", "--version", *commands.SUBCOMMANDS]
        assert "  endpoints TARGET  show the endpoints a client sees" in helped
        assert "  include-path      print the -I directory" in helped


def test_console_script_runs_subcommands(plugin_dir: Path) -> None:
    proc = subprocess.run(
        [str(plugin_dir / "protoc-gen-localfirst"), "include-path"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(proc.stdout.strip(), "localfirst", "options.proto").is_file()


def test_syntax_error_reaches_the_user(
    run_protoc: Callable[..., ProtocResult], tmp_path: Path
) -> None:
    include = tmp_path / "protos"
    include.mkdir()
    (include / "broken.proto").write_text(
        'syntax = "proto3";\npackage broken;\nservice S {\n  rpc Do(Req) returns (Resp)\n}\n'
    )
    result = run_protoc(["broken.proto"], include=include)
    assert result.returncode != 0
    # What the user sees: protoc's own file:line:column message; no plugin output.
    assert 'broken.proto:5:1: Expected ";".' in result.stderr
    assert result.files() == {}


def test_files_without_services_produce_nothing(run_protoc: Callable[..., ProtocResult]) -> None:
    result = run_protoc(["edge/messages_only.proto"], python_out=False)
    assert result.returncode == 0, result.stderr
    assert result.files() == {}


def _request(*files: descriptor_pb2.FileDescriptorProto) -> plugin_pb2.CodeGeneratorRequest:
    request = plugin_pb2.CodeGeneratorRequest(file_to_generate=[files[-1].name])
    request.proto_file.extend(files)
    return request


def _service_file(input_type: str) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="x/y.proto", package="x", syntax="proto3")
    file.message_type.add(name="M")
    service = file.service.add(name="S")
    service.method.add(name="Do", input_type=input_type, output_type=".x.M")
    return file


def test_response_declares_features_and_editions() -> None:
    response = plugin.generate(_request(_service_file(".x.M")))
    assert not response.HasField("error"), response.error
    features = response.supported_features
    assert features & plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    assert features & plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS
    assert response.minimum_edition <= descriptor_pb2.EDITION_PROTO2
    assert response.maximum_edition >= descriptor_pb2.EDITION_2023
    assert [f.name for f in response.file] == ["x/y_localfirst.py"]


def test_root_level_file_imports_like_grpc() -> None:
    file = _service_file(".x.M")
    file.name = "y-z.proto"
    response = plugin.generate(_request(file))
    assert [f.name for f in response.file] == ["y_z_localfirst.py"]
    assert "\nimport y_z_pb2 as y__z__pb2\n" in response.file[0].content


def test_unresolvable_type_becomes_response_error() -> None:
    response = plugin.generate(_request(_service_file(".x.Missing")))
    assert list(response.file) == []
    assert response.error == (
        "protoc-gen-localfirst: x/y.proto: rpc x.S.Do: message type .x.Missing "
        "is not in the request"
    )


def test_plugin_bug_becomes_response_error_naming_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*args: object, **kwargs: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(plugin, "render_file", explode)
    response = plugin.generate(_request(_service_file(".x.M")))
    assert list(response.file) == []
    assert "internal error while generating x/y.proto" in response.error
    assert "RuntimeError: boom" in response.error


def test_main_round_trip_in_process() -> None:
    request = _request(_service_file(".x.M"))
    request.parameter = "sync_client=false"
    stdout = io.BytesIO()
    stderr = io.StringIO()
    code = plugin.main([], io.BytesIO(request.SerializeToString()), stdout, stderr)
    assert (code, stderr.getvalue()) == (0, "")
    response = plugin_pb2.CodeGeneratorResponse.FromString(stdout.getvalue())
    assert "class SClient(_lf.AsyncClient):" in response.file[0].content
    assert "SyncClient" not in response.file[0].content

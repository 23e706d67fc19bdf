"""Call policy options (localfirst/options.proto): merge rules, validation errors as
protoc shows them, the generated method table, Debian's protoc, the include path."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from protoc_gen_localfirst.codegen import policy
from protoc_gen_localfirst.codegen.policy import Policy
from protoc_gen_localfirst.schema import Idempotency, MethodPolicy

from .conftest import PROTOS, REPO, ProtocResult

SERVICE_HEADER = """\
syntax = "proto3";
package p.v1;
import "localfirst/options.proto";
message Req {}
message Rep {}
"""


@pytest.fixture
def proto_dir(tmp_path: Path) -> Path:
    """An include dir holding localfirst/options.proto, as the package ships it."""
    root = tmp_path / "protos"
    shutil.copytree(policy.INCLUDE_DIR, root, ignore=shutil.ignore_patterns("*.binpb"))
    return root


@pytest.fixture
def compile_service(
    proto_dir: Path, run_protoc: Callable[..., ProtocResult]
) -> Callable[..., ProtocResult]:
    def compile_(body: str, compiler: str = "grpc_tools") -> ProtocResult:
        (proto_dir / "p/v1").mkdir(parents=True, exist_ok=True)
        (proto_dir / "p/v1/s.proto").write_text(SERVICE_HEADER + body)
        return run_protoc(["p/v1/s.proto"], include=proto_dir, compiler=compiler)

    return compile_


def _load(result: ProtocResult, name: str = "p/v1/s_localfirst.py") -> ModuleType:
    """Import a generated module (and its _pb2 neighbours) from protoc's output."""
    assert result.returncode == 0, result.stderr
    for module in [m for m in sys.modules if m.split(".")[0] in ("p", "localfirst")]:
        del sys.modules[module]
    sys.path.insert(0, str(result.out))
    try:
        spec = importlib.util.spec_from_file_location("s_localfirst_under_test", result.out / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(result.out))


def _policies(module: ModuleType) -> dict[str, MethodPolicy]:
    (service,) = module.SERVICES
    return {m.name: m.policy for m in service.methods}


MERGE = """
service S {
  option (localfirst.default_call_policy) = {
    max_attempts: 3
    initial_backoff: { nanos: 10000000 }
    retryable_codes: ["UNAVAILABLE", "ABORTED"]
    hedging_delay: { nanos: 50000000 }
  };
  rpc Plain(Req) returns (Rep);
  rpc Own(Req) returns (Rep) {
    option (localfirst.call_policy) = {
      max_attempts: 5
      max_backoff: { seconds: 2 nanos: 500000000 }
      backoff_multiplier: 1.5
      retryable_codes: ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"]
      per_attempt_timeout: { nanos: 250000000 }
    };
  }
  rpc Read(Req) returns (Rep) {
    option idempotency_level = NO_SIDE_EFFECTS;
    option (localfirst.call_policy) = { hedging_delay: {} };
  }
  rpc ReadDefault(Req) returns (stream Rep) {
    option idempotency_level = NO_SIDE_EFFECTS;
  }
}
service Bare { rpc Call(Req) returns (Rep); }
"""


def test_merge_rpc_wins_field_by_field(compile_service: Callable[..., ProtocResult]) -> None:
    result = compile_service(MERGE)
    module = _load(result)
    table = {s.name: {m.name: m.policy for m in s.methods} for s in module.SERVICES}
    default_without_hedging = MethodPolicy(
        max_attempts=3, initial_backoff=0.01, retryable_codes=("UNAVAILABLE", "ABORTED")
    )
    assert table["p.v1.S"] == {
        # The service default's hedging_delay reaches only NO_SIDE_EFFECTS rpcs.
        "Plain": default_without_hedging,
        "Own": MethodPolicy(
            max_attempts=5,
            initial_backoff=0.01,
            max_backoff=2.5,
            backoff_multiplier=1.5,
            retryable_codes=("RESOURCE_EXHAUSTED", "UNAVAILABLE"),  # duplicates dropped
            per_attempt_timeout=0.25,
        ),
        # An explicit zero is a value (hedge at once), not "unset".
        "Read": MethodPolicy(
            max_attempts=3,
            initial_backoff=0.01,
            retryable_codes=("UNAVAILABLE", "ABORTED"),
            hedging_delay=0.0,
        ),
        "ReadDefault": MethodPolicy(
            max_attempts=3,
            initial_backoff=0.01,
            retryable_codes=("UNAVAILABLE", "ABORTED"),
            hedging_delay=0.05,
        ),
    }
    assert table["p.v1.Bare"] == {"Call": MethodPolicy()}
    source = (result.out / "p/v1/s_localfirst.py").read_text()
    # No policy, no argument: the table of an rpc without options is unchanged.
    bare = source[source.index("_BARE_CALL:") :]
    assert "policy=" not in bare[: bare.index("\n)\n")]
    assert 'retryable_codes=("RESOURCE_EXHAUSTED", "UNAVAILABLE"),' in source
    # The service default is written once; rpcs name it, or what they change in it.
    assert source.count("initial_backoff=0.01,") == 1
    assert source.count("_S_POLICY = _lf.MethodPolicy(") == 1
    read_default = source[source.index("_S_READ_DEFAULT:") :]
    assert "    policy=_S_POLICY,\n)" in read_default
    plain = source[source.index("_S_PLAIN:") :]
    assert "    policy=_S_POLICY.replace(\n        hedging_delay=None,\n    ),\n)" in plain


def test_greeter_table_in_generated() -> None:
    from greeter.v1 import greeter_localfirst as greeter

    policies = {m.name: m.policy for m in greeter.GREETER_SERVICE.methods}
    assert policies["WhoAmI"] == MethodPolicy(
        max_backoff=0.5, per_attempt_timeout=1.0, hedging_delay=0.2
    )
    assert policies["SetGreeting"] == MethodPolicy(
        max_attempts=4, max_backoff=0.5, retryable_codes=("UNAVAILABLE", "RESOURCE_EXHAUSTED")
    )
    assert policies["SayHello"] == MethodPolicy(max_backoff=0.5)
    assert greeter.GREETER_SERVICE.method("WhoAmI").idempotency is Idempotency.NO_SIDE_EFFECTS


def test_policy_merge_unit() -> None:
    default = Policy(max_attempts=2, retryable_codes=("ABORTED",), hedging_delay=0.1)
    own = Policy(max_attempts=5, per_attempt_timeout=1.0)
    assert policy.merged_over(own, default) == Policy(
        max_attempts=5, retryable_codes=("ABORTED",), hedging_delay=0.1, per_attempt_timeout=1.0
    )
    assert policy.is_empty(policy.merged_over(Policy(), Policy()))
    assert policy.keyword_literals(own) == (("max_attempts", "5"), ("per_attempt_timeout", "1.0"))


def _rpc(option: str, idempotency: str = "NO_SIDE_EFFECTS", rpc: str = "Get") -> str:
    return (
        f"service S {{ rpc {rpc}(Req) returns (Rep) {{\n"
        f"  option idempotency_level = {idempotency};\n"
        f"  option (localfirst.call_policy) = {{ {option} }};\n}} }}\n"
    )


PREFIX = "--localfirst_out: protoc-gen-localfirst: p/v1/s.proto: service p.v1.S, rpc Get: "
OPTION = "option (localfirst.call_policy)"

ERRORS = [
    (
        _rpc('retryable_codes: ["UNAVAILABLE", "UNAVAILBLE"]'),
        (
            f"{PREFIX}{OPTION}.retryable_codes: 'UNAVAILBLE' is not a gRPC status code name"
            " (did you mean UNAVAILABLE?); accepted: CANCELLED, UNKNOWN,"
        ),
    ),
    (
        _rpc('retryable_codes: ["resource_exhausted"]'),
        "'resource_exhausted' is not a gRPC status code name (did you mean RESOURCE_EXHAUSTED?)",
    ),
    (
        _rpc('retryable_codes: ["OK"]'),
        "'OK' is not a gRPC status code name (OK is success, not a failure to retry)",
    ),
    (
        _rpc("max_attempts: 0"),
        (
            f"{PREFIX}{OPTION}.max_attempts: must be at least 1 (it counts the first attempt;"
            " 1 disables retries), got 0"
        ),
    ),
    (
        _rpc("initial_backoff: { seconds: -1 }"),
        f"{PREFIX}{OPTION}.initial_backoff: a duration must not be negative, got -1.0 s",
    ),
    (
        _rpc("per_attempt_timeout: { nanos: -5 }"),
        f"{OPTION}.per_attempt_timeout: a duration must not be negative",
    ),
    (
        _rpc("max_backoff: { seconds: 1 nanos: -1 }"),
        (
            f"{OPTION}.max_backoff: {{seconds: 1, nanos: -1}} is not a valid Duration"
            " (seconds and nanos must have the same sign)"
        ),
    ),
    (
        _rpc("hedging_delay: { nanos: 1000000000 }"),
        f"{OPTION}.hedging_delay: {{seconds: 0, nanos: 1000000000}} is not a valid Duration",
    ),
    (
        _rpc("per_attempt_timeout: {}"),
        f"{OPTION}.per_attempt_timeout: must be greater than 0",
    ),
    (
        _rpc("backoff_multiplier: 0.5"),
        f"{OPTION}.backoff_multiplier: must be a finite number >= 1, got 0.5",
    ),
    (
        _rpc("backoff_multiplier: inf"),
        f"{OPTION}.backoff_multiplier: must be a finite number >= 1, got inf",
    ),
    (
        _rpc("initial_backoff: { seconds: 3 } max_backoff: { seconds: 1 }"),
        f"{PREFIX}initial_backoff (3.0 s) is greater than max_backoff (1.0 s) after merging",
    ),
    (
        _rpc("hedging_delay: { nanos: 1000 }", idempotency="IDEMPOTENT"),
        (
            f"{PREFIX}{OPTION}.hedging_delay: hedging sends the same request to several"
            " replicas, so it is only allowed on rpcs with"
            " `option idempotency_level = NO_SIDE_EFFECTS`; Get is IDEMPOTENT"
        ),
    ),
    (
        _rpc("hedging_delay: { nanos: 1000 }", idempotency="IDEMPOTENCY_UNKNOWN"),
        "Get is IDEMPOTENCY_UNKNOWN",
    ),
    (
        (
            'service S { option (localfirst.default_call_policy) = { retryable_codes: ["NOPE"] };'
            " rpc Get(Req) returns (Rep); }"
        ),
        (
            "--localfirst_out: protoc-gen-localfirst: p/v1/s.proto: service p.v1.S:"
            " option (localfirst.default_call_policy).retryable_codes: 'NOPE' is not a gRPC"
            " status code name"
        ),
    ),
]


@pytest.mark.parametrize(("body", "message"), ERRORS, ids=[e[1][-60:] for e in ERRORS])
def test_validation_errors_through_protoc(
    compile_service: Callable[..., ProtocResult], body: str, message: str
) -> None:
    result = compile_service(body)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (result.out / "p/v1/s_localfirst.py").exists()


def test_debian_protoc_reads_the_options(compile_service: Callable[..., ProtocResult]) -> None:
    """Debian's protoc 3.21: proto3 extensions of descriptor.proto, same output."""
    ours = compile_service(MERGE)
    debian = compile_service(MERGE, compiler="debian")
    assert debian.returncode == 0, debian.stderr
    name = "p/v1/s_localfirst.py"
    assert debian.files()[name] == ours.files()[name]
    bad = compile_service(_rpc("max_attempts: 0"), compiler="debian")
    assert bad.returncode != 0
    assert f"{PREFIX}{OPTION}.max_attempts: must be at least 1" in bad.stderr


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, appended by hand: a process that has
    localfirst/options_pb2 imported would refuse to build garbage options."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _request(method_options: bytes, service_options: bytes = b"") -> bytes:
    method = descriptor_pb2.MethodDescriptorProto(name="Get", input_type=".g.M", output_type=".g.M")
    method_bytes = method.SerializeToString() + _field(4, method_options)
    service_bytes = (
        descriptor_pb2.ServiceDescriptorProto(name="S").SerializeToString()
        + _field(2, method_bytes)
        + _field(3, service_options)
    )
    file = descriptor_pb2.FileDescriptorProto(name="g.proto", package="g", syntax="proto3")
    file.message_type.add(name="M")
    file_bytes = file.SerializeToString() + _field(6, service_bytes)
    request = plugin_pb2.CodeGeneratorRequest(file_to_generate=["g.proto"])
    return request.SerializeToString() + _field(15, file_bytes)


@pytest.mark.parametrize(
    ("method_options", "service_options", "expected"),
    [
        # call_policy whose payload is not a CallPolicy (a truncated varint)
        (_field(51730, b"\x08\xff"), b"", "g.proto: service g.S, rpc Get: option"),
        (b"", _field(51731, b"\xff"), "g.proto: service g.S: option"),
    ],
)
def test_garbage_option_bytes_name_the_rpc(
    method_options: bytes, service_options: bytes, expected: str
) -> None:
    """In the plugin's own process (protoc's view): a response error, exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "protoc_gen_localfirst"],
        input=_request(method_options, service_options),
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, b"")
    response = plugin_pb2.CodeGeneratorResponse.FromString(proc.stdout)
    assert response.error.startswith(f"protoc-gen-localfirst: {expected}"), response.error
    assert "is not a valid localfirst.CallPolicy" in response.error
    assert "internal error" not in response.error


def test_include_path_command_and_user_flow(tmp_path: Path, plugin_dir: Path) -> None:
    """What README tells users: -I"$(python -m protoc_gen_localfirst include-path)"
    and localfirst/options.proto on the file list, with protos outside the package."""
    printed = subprocess.run(
        [sys.executable, "-m", "protoc_gen_localfirst", "include-path"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=60,
    ).stdout
    include = Path(printed.strip())
    assert printed.endswith("\n")
    assert include == policy.INCLUDE_DIR
    shipped = (include / "localfirst/options.proto").read_bytes()
    assert shipped == (PROTOS / "localfirst/options.proto").read_bytes()

    user = tmp_path / "user"
    (user / "greeter/v1").mkdir(parents=True)
    shutil.copy(PROTOS / "greeter/v1/greeter.proto", user / "greeter/v1/greeter.proto")
    out = tmp_path / "gen"
    out.mkdir()
    env = {**os.environ, "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for argv in (
        [sys.executable, "-m", "grpc_tools.protoc"],
        ["/usr/bin/protoc"],
    ):
        proc = subprocess.run(
            [
                *argv,
                f"-I{user}",
                f"-I{include}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--localfirst_out={out}",
                "localfirst/options.proto",
                "greeter/v1/greeter.proto",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (argv, proc.stderr)
        assert (out / "localfirst/options_pb2.py").exists()
        assert (out / "greeter/v1/greeter_localfirst.py").exists()

    bad = subprocess.run(
        [sys.executable, "-m", "protoc_gen_localfirst", "include-path", "extra"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "usage: python -m protoc_gen_localfirst include-path" in bad.stderr


def test_options_never_enter_the_default_pool() -> None:
    """The plugin's schema lives in a private pool: a user's own
    localfirst/options_pb2 (from any protobuf version) can never clash with it."""
    probe = (
        "from google.protobuf import descriptor_pb2, descriptor_pool\n"
        "from protoc_gen_localfirst.codegen import plugin, policy\n"
        "policy.service_policy(descriptor_pb2.ServiceOptions(), file='f', service='s')\n"
        "try:\n"
        "    descriptor_pool.Default().FindFileByName('localfirst/options.proto')\n"
        "except KeyError:\n"
        "    print('absent')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.stdout == "absent\n", proc.stderr


def test_policy_fields_match_the_runtime_contract() -> None:
    """Every CallPolicy field of the proto is a MethodPolicy field, so it reaches the table."""
    from dataclasses import fields

    call_policy = policy._schema().call_policy.message_type
    assert sorted(f.name for f in call_policy.fields) == sorted(f.name for f in fields(Policy))

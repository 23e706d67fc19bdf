"""The plugin's static copies of runtime facts match the runtime.

The plugin never imports the runtime, so what it must know about it is
written out (names the runtime base classes define, gRPC status code names,
the runtime API number); these tests compare each copy with the real thing.
"""

from __future__ import annotations

import dataclasses
import sys
import typing

import grpc

from protoc_gen_localfirst import runtime
from protoc_gen_localfirst.codegen import model, policy, reserved
from protoc_gen_localfirst.runtime.compat import RUNTIME_API
from protoc_gen_localfirst.schema import MethodPolicy, PolicyFields


def test_client_reserved_names_cover_the_runtime_clients() -> None:
    """Every public attribute of the client base classes; adding one to the runtime
    fails here until it is listed in ``reserved.CLIENT_PUBLIC``."""
    real = set(dir(runtime.AsyncClient)) | set(dir(runtime.SyncClient))
    # Attributes __init__ sets hide a generated method of the same name just as well.
    client = runtime.SyncClient("static:///127.0.0.1:1@node-a", probe_nodes=False)
    real |= set(vars(client))
    client.close()
    assert {name for name in real if not name.startswith("_")} == reserved.CLIENT_PUBLIC
    assert {name for name in real if not name.startswith("_")} <= reserved.CLIENT_RESERVED


def test_servicer_reserved_names_are_the_runtime_servicers() -> None:
    """The names of the running Python's ``Servicer``, plus the class attributes
    newer Pythons add (the generated code runs on every supported version)."""
    real = set(dir(runtime.Servicer))
    newer = reserved.SERVICER_ATTRIBUTES_SINCE_3_13
    if sys.version_info >= (3, 13):
        assert newer <= real
    assert (real - set(dir(object))) | newer == reserved.SERVICER_ATTRIBUTES
    assert reserved.SERVICER_RESERVED == real | newer | {"SERVICE"}


def test_status_code_names_are_grpcs() -> None:
    expected = tuple(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)
    assert policy.STATUS_CODES == expected


def test_generator_and_runtime_agree_on_the_api() -> None:
    assert model.RUNTIME_API == RUNTIME_API == runtime.RUNTIME_API


def test_policy_fields_are_method_policy_fields() -> None:
    """``MethodPolicy.replace``'s keyword arguments are exactly its fields, same types."""
    fields = {f.name: f.type for f in dataclasses.fields(MethodPolicy)}
    hints = typing.get_type_hints(PolicyFields)
    assert list(hints) == list(fields)
    method_hints = typing.get_type_hints(MethodPolicy)
    assert all(hints[name] == method_hints[name] for name in fields)
    assert MethodPolicy(max_backoff=0.5).replace(max_attempts=2, max_backoff=None) == MethodPolicy(
        max_attempts=2
    )

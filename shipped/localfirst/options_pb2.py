"""``localfirst/options.proto`` for Python: what ``from localfirst import options_pb2`` finds.

A user's ``foo_pb2.py`` for a proto that imports ``localfirst/options.proto``
starts with ``from localfirst import options_pb2``; protoc-gen-localfirst
ships this module (top-level ``localfirst``, a namespace package) so that
import works without generating it. It registers the same file protoc's
``--python_out`` would (``generated/localfirst/options_pb2.py``; a test keeps
the two and ``include/localfirst/options.binpb`` equal), but without protoc's
runtime-version check, which would pin the protobuf runtime to the release
that generated it while the package accepts protobuf >= 5.26. The builder
calls are the ones generated code uses since protobuf 3.20.

A user who generates ``localfirst/options_pb2.py`` themselves gets the same
descriptor; whichever comes first on ``sys.path`` is imported.
"""

from google.protobuf import descriptor as _descriptor
from google.protobuf import descriptor_pb2 as _descriptor_pb2  # noqa: F401 - a dependency
from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf import duration_pb2 as _duration_pb2  # noqa: F401 - a dependency
from google.protobuf.internal import builder as _builder

SERIALIZED = (
    b"\n\x18localfirst/options.proto\x12\nlocalfirst\x1a google/protobuf/desc"
    b'riptor.proto\x1a\x1egoogle/protobuf/duration.proto"\xd7\x02\n\nCallPolicy\x12'
    b"\x19\n\x0cmax_attempts\x18\x01 \x01(\rH\x00\x88\x01\x01\x122\n\x0finitial_backoff\x18\x02 \x01(\x0b2\x19.google"
    b".protobuf.Duration\x12.\n\x0bmax_backoff\x18\x03 \x01(\x0b2\x19.google.protobuf.Du"
    b"ration\x12\x1f\n\x12backoff_multiplier\x18\x04 \x01(\x01H\x01\x88\x01\x01\x12\x17\n\x0fretryable_codes\x18\x05"
    b" \x03(\t\x126\n\x13per_attempt_timeout\x18\x06 \x01(\x0b2\x19.google.protobuf.Duration"
    b"\x120\n\rhedging_delay\x18\x07 \x01(\x0b2\x19.google.protobuf.DurationB\x0f\n\r_max_a"
    b"ttemptsB\x15\n\x13_backoff_multiplier:M\n\x0bcall_policy\x12\x1e.google.proto"
    b"buf.MethodOptions\x18\x92\x94\x03 \x01(\x0b2\x16.localfirst.CallPolicy:V\n\x13default"
    b"_call_policy\x12\x1f.google.protobuf.ServiceOptions\x18\x93\x94\x03 \x01(\x0b2\x16.loca"
    b"lfirst.CallPolicyb\x06proto3"
)
"""The serialized ``FileDescriptorProto`` of ``localfirst/options.proto``."""

DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(SERIALIZED)

_globals = globals()
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _globals)
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, "localfirst.options_pb2", _globals)
if not _descriptor._USE_C_DESCRIPTORS:
    DESCRIPTOR._loaded_options = None
    _globals["_CALLPOLICY"]._serialized_start = 107
    _globals["_CALLPOLICY"]._serialized_end = 450

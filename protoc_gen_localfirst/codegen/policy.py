"""Call policy from the proto: the ``localfirst/options.proto`` extensions.

``(localfirst.default_call_policy)`` on a service and ``(localfirst.call_policy)``
on an rpc are read from the descriptors protoc hands the plugin, merged (the
rpc's set fields win, field by field), validated, and turned into the keyword
arguments of the generated ``MethodPolicy(...)``.

How the extensions are read. protoc sends options as serialized
``MethodOptions``/``ServiceOptions``; a parser that does not know an extension
keeps it as an unknown field, which survives re-serialization. We re-parse
those bytes into ``MethodOptions``/``ServiceOptions`` classes of a *private*
descriptor pool that has ``localfirst/options.proto`` registered, and read
``Extensions[...]`` there. The schema is the descriptor set that
``scripts/generate.sh`` compiles from ``protos/localfirst/options.proto``
(``include/localfirst/options.binpb``), not protoc's ``_pb2`` Python output:
that output pins the protobuf runtime to the version that generated it (7.35
here, while the package accepts protobuf >= 5.26), and it would register the
file in the default pool, where it could clash with a user's own
``localfirst/options_pb2`` and would make protobuf decode the extension while
parsing the whole request (so garbage in it could not be reported per rpc).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from protoc_gen_localfirst.codegen.literals import literal
from protoc_gen_localfirst.schema import MethodPolicy

INCLUDE_DIR = Path(__file__).resolve().parents[1] / "include"
"""Directory to put on protoc's include path (``-I``) for ``localfirst/options.proto``."""

OPTIONS_PROTO = "localfirst/options.proto"
DESCRIPTOR_SET = INCLUDE_DIR / "localfirst" / "options.binpb"

METHOD_OPTION = "localfirst.call_policy"
SERVICE_OPTION = "localfirst.default_call_policy"

STATUS_CODES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
"""Names ``retryable_codes`` accepts: the ``grpc.StatusCode`` members in their
order, OK excluded. Written out so that the plugin never imports grpc; a test
compares it with ``grpc.StatusCode``."""

# google.protobuf.Duration's valid range (duration.proto).
_MAX_DURATION_SECONDS = 315_576_000_000


class PolicyError(Exception):
    """An invalid localfirst option; the message names the file, service, rpc and field."""


@dataclass(frozen=True)
class _Schema:
    method_options: Callable[[], Message]
    service_options: Callable[[], Message]
    call_policy: FieldDescriptor
    default_call_policy: FieldDescriptor


@functools.cache
def _schema() -> _Schema:
    try:
        data = DESCRIPTOR_SET.read_bytes()
    except OSError as exc:
        raise PolicyError(
            f"cannot read {DESCRIPTOR_SET} ({exc.strerror}); the installation is broken"
        ) from exc
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    for file in files.file:
        pool.Add(file)

    def message_class(name: str) -> Callable[[], Message]:
        cls: Callable[[], Message] = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(name)
        )
        return cls

    return _Schema(
        method_options=message_class("google.protobuf.MethodOptions"),
        service_options=message_class("google.protobuf.ServiceOptions"),
        call_policy=pool.FindExtensionByName(METHOD_OPTION),
        default_call_policy=pool.FindExtensionByName(SERVICE_OPTION),
    )


def _extension(
    options: Message, factory: Callable[[], Message], extension: FieldDescriptor, where: str
) -> Any | None:
    """The extension's message in ``options`` (re-parsed), or None if not set."""
    parsed = factory()
    try:
        parsed.ParseFromString(options.SerializeToString())
    except DecodeError as exc:
        raise PolicyError(
            f"{where}: option ({extension.full_name}) is not a valid "
            f"localfirst.CallPolicy ({exc}); is {OPTIONS_PROTO} the one this plugin ships?"
        ) from exc
    if not parsed.HasExtension(extension):  # type: ignore[arg-type]
        return None
    return parsed.Extensions[extension]  # type: ignore[index]


Policy = MethodPolicy
"""One ``CallPolicy`` as plain values (None = not set, durations in seconds):
the runtime's own method-table type, so nothing is mirrored."""


def merged_over(own: Policy, default: Policy) -> Policy:
    """``own`` with its unset fields taken from ``default``."""
    values = {}
    for f in fields(own):
        value = getattr(own, f.name)
        values[f.name] = getattr(default, f.name) if value is None else value
    return Policy(**values)


def is_empty(policy: Policy) -> bool:
    return all(getattr(policy, f.name) is None for f in fields(policy))


def keyword_literals(policy: Policy) -> tuple[tuple[str, str], ...]:
    """``(field, Python literal)`` for the set fields, in ``MethodPolicy`` order."""
    return tuple(
        (f.name, literal(getattr(policy, f.name)))
        for f in fields(policy)
        if getattr(policy, f.name) is not None
    )


def changed_literals(policy: Policy, base: Policy) -> tuple[tuple[str, str], ...]:
    """``(field, Python literal)`` for the fields where ``policy`` differs from ``base``
    (a literal may be ``None``: the rpc unsets what the base sets)."""
    return tuple(
        (f.name, literal(getattr(policy, f.name)))
        for f in fields(policy)
        if getattr(policy, f.name) != getattr(base, f.name)
    )


_DURATIONS = ("initial_backoff", "max_backoff", "per_attempt_timeout", "hedging_delay")


def _seconds(message: Any, name: str, where: str) -> float | None:
    if not message.HasField(name):
        return None
    duration = getattr(message, name)
    seconds, nanos = int(duration.seconds), int(duration.nanos)
    field = f"{where}.{name}"
    if abs(seconds) > _MAX_DURATION_SECONDS or abs(nanos) > 999_999_999:
        raise PolicyError(
            f"{field}: {{seconds: {seconds}, nanos: {nanos}}} is not a valid Duration"
        )
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise PolicyError(
            f"{field}: {{seconds: {seconds}, nanos: {nanos}}} is not a valid Duration"
            " (seconds and nanos must have the same sign)"
        )
    if seconds < 0 or nanos < 0:
        raise PolicyError(
            f"{field}: a duration must not be negative, got {seconds + nanos / 1e9} s"
        )
    return seconds + nanos / 1e9


def _codes(names: Any, where: str) -> tuple[str, ...] | None:
    result: list[str] = []
    for name in names:
        if name not in STATUS_CODES:
            hint = ""
            guess = difflib.get_close_matches(str(name).upper(), STATUS_CODES, n=1, cutoff=0.6)
            if guess:
                hint = f" (did you mean {guess[0]}?)"
            elif name == "OK":
                hint = " (OK is success, not a failure to retry)"
            raise PolicyError(
                f"{where}.retryable_codes: {name!r} is not a gRPC status code name{hint};"
                f" accepted: {', '.join(STATUS_CODES)}"
            )
        if name not in result:
            result.append(name)
    return tuple(result) or None


def _policy(message: Any, where: str) -> Policy:
    """Validate one CallPolicy message on its own; ``where`` names the option."""
    max_attempts = int(message.max_attempts) if message.HasField("max_attempts") else None
    if max_attempts is not None and max_attempts < 1:
        raise PolicyError(
            f"{where}.max_attempts: must be at least 1 (it counts the first attempt;"
            " 1 disables retries), got 0"
        )
    multiplier = (
        float(message.backoff_multiplier) if message.HasField("backoff_multiplier") else None
    )
    if multiplier is not None and not (math.isfinite(multiplier) and multiplier >= 1):
        raise PolicyError(
            f"{where}.backoff_multiplier: must be a finite number >= 1, got {multiplier!r}"
        )
    durations = {name: _seconds(message, name, where) for name in _DURATIONS}
    if durations["per_attempt_timeout"] == 0:
        raise PolicyError(
            f"{where}.per_attempt_timeout: must be greater than 0 (unset means no per-attempt"
            " limit)"
        )
    return Policy(
        max_attempts=max_attempts,
        backoff_multiplier=multiplier,
        retryable_codes=_codes(message.retryable_codes, where),
        **durations,
    )


def service_policy(options: descriptor_pb2.ServiceOptions, *, file: str, service: str) -> Policy:
    """The service's ``default_call_policy`` (empty if unset), validated."""
    schema = _schema()
    where = f"{file}: service {service}: option ({SERVICE_OPTION})"
    message = _extension(options, schema.service_options, schema.default_call_policy, where)
    return Policy() if message is None else _policy(message, where)


def method_policy(
    options: descriptor_pb2.MethodOptions,
    default: Policy,
    *,
    file: str,
    service: str,
    rpc: str,
    idempotency: str,
) -> Policy:
    """The rpc's merged policy: its ``call_policy`` over the service ``default``.

    ``idempotency`` is the ``Idempotency`` member name. A hedging delay the
    rpc sets itself on a method that is not NO_SIDE_EFFECTS is an error; one
    inherited from the service default is dropped for such methods.
    """
    schema = _schema()
    where = f"{file}: service {service}, rpc {rpc}: option ({METHOD_OPTION})"
    message = _extension(options, schema.method_options, schema.call_policy, where)
    own = Policy() if message is None else _policy(message, where)
    if own.hedging_delay is not None and idempotency != "NO_SIDE_EFFECTS":
        raise PolicyError(
            f"{where}.hedging_delay: hedging sends the same request to several replicas, so"
            f" it is only allowed on rpcs with `option idempotency_level = NO_SIDE_EFFECTS`;"
            f" {rpc} is {idempotency}"
        )
    inherited = default
    if idempotency != "NO_SIDE_EFFECTS" and default.hedging_delay is not None:
        inherited = dataclasses.replace(default, hedging_delay=None)
    merged = merged_over(own, inherited)
    if (
        merged.initial_backoff is not None
        and merged.max_backoff is not None
        and merged.initial_backoff > merged.max_backoff
    ):
        raise PolicyError(
            f"{file}: service {service}, rpc {rpc}: initial_backoff ({merged.initial_backoff} s)"
            f" is greater than max_backoff ({merged.max_backoff} s) after merging"
            f" ({METHOD_OPTION}) over ({SERVICE_OPTION})"
        )
    return merged


def include_path_command(args: Sequence[str]) -> int:
    """``python -m protoc_gen_localfirst include-path``: print the ``-I`` directory.

    It holds ``localfirst/options.proto``, so
    ``protoc -I"$(python -m protoc_gen_localfirst include-path)" ...`` resolves
    ``import "localfirst/options.proto";``.
    """
    if args:
        sys.stderr.write(
            "usage: python -m protoc_gen_localfirst include-path\n"
            f"prints the directory that holds {OPTIONS_PROTO}, for protoc's -I\n"
        )
        return 0 if args[0] in ("-h", "--help") else 2
    if not (INCLUDE_DIR / OPTIONS_PROTO).is_file():
        sys.stderr.write(f"{INCLUDE_DIR / OPTIONS_PROTO} is missing; the installation is broken\n")
        return 1
    sys.stdout.write(f"{INCLUDE_DIR}\n")
    return 0

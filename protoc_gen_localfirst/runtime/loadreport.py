"""Per-call load reports: what a server tells its clients about its load (sans-IO).

The format is gRPC's ORCA (gRFC A51): an ``xds.data.orca.v3.OrcaLoadReport``,
serialized into a response trailer. gRFC A51 names that trailer
``endpoint-load-metrics-bin``, but grpc's core library owns the name: a
Python server that sets it has it silently dropped (checked with grpcio
1.85), and a client's core consumes it without showing it to the
application. So our servers send the same message under
``localfirst-load-bin``, on HTTP/2 and HTTP/3 alike, and our client reads
either name (the ORCA one reaches it from servers whose trailers grpc core
does not filter, e.g. over our HTTP/3 transport). Where ORCA has no field,
named metrics carry ours:

- ``application_utilization``: calls in flight / concurrency limit (when the
  server has a limit), the number the client's spill-over compares with 1;
- ``named_metrics["localfirst.in_flight"]`` and ``["localfirst.limit"]``;
- ``cpu_utilization``: the server process's CPU use over the last interval,
  as a fraction of one core per core available;
- ``rps_fractional``: calls started per second, recently;
- any metric a ``load_metrics`` hook of the server adds (``named_metrics``).

The message class is built from a descriptor written here (same package,
names and field numbers as xds' ``orca_load_report.proto``; a test checks it
against the ``xds-protos`` package) in a private descriptor pool: no
generated ``_pb2`` module that would pin the protobuf version, and no clash
with an application that imports xds-protos itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

LOAD_REPORT_KEY = "localfirst-load-bin"
"""The trailer our servers put their load report in (see the module docstring)."""

ORCA_REPORT_KEY = "endpoint-load-metrics-bin"
"""gRFC A51's name for it, which grpc core reserves for itself."""

IN_FLIGHT_METRIC = "localfirst.in_flight"
LIMIT_METRIC = "localfirst.limit"

_DOUBLE = descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE
_UINT64 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

# (name, number, type) of OrcaLoadReport's scalar fields, and its map<string, double> fields.
_SCALARS = (
    ("cpu_utilization", 1, _DOUBLE),
    ("mem_utilization", 2, _DOUBLE),
    ("rps", 3, _UINT64),
    ("rps_fractional", 6, _DOUBLE),
    ("eps", 7, _DOUBLE),
    ("application_utilization", 9, _DOUBLE),
)
_MAPS = (("request_cost", 4), ("utilization", 5), ("named_metrics", 8))


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One server's load when it answered a call."""

    in_flight: int = 0
    """Calls the server was running (this one included)."""
    limit: int | None = None
    """Its concurrency limit, when it has admission control."""
    cpu_utilization: float = 0.0
    rps: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Named metrics besides ours (a server's ``load_metrics`` hook)."""

    @property
    def utilization(self) -> float | None:
        """``in_flight / limit``: 1.0 means full. None when the server has no limit."""
        if not self.limit:
            return None
        return self.in_flight / self.limit


def encode(report: LoadReport) -> bytes:
    """The report as a serialized ``OrcaLoadReport``."""
    message: Any = _message_class()()
    message.cpu_utilization = report.cpu_utilization
    message.rps_fractional = report.rps
    named = message.named_metrics
    for name, value in report.metrics.items():
        named[name] = value
    named[IN_FLIGHT_METRIC] = float(report.in_flight)
    if report.limit:
        named[LIMIT_METRIC] = float(report.limit)
        message.application_utilization = report.in_flight / report.limit
    data: bytes = message.SerializeToString()
    return data


def decode(data: bytes) -> LoadReport | None:
    """A report from trailer bytes; None when they are not an ``OrcaLoadReport``.

    Reports of other ORCA servers have no ``localfirst.*`` metrics: their
    ``application_utilization`` (else ``cpu_utilization``) becomes the
    utilization, as in_flight out of a limit of 100.
    """
    message: Any = _message_class()()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeWarning):
        return None
    named = dict(message.named_metrics)
    numbers = (message.cpu_utilization, message.application_utilization, *named.values())
    if not all(math.isfinite(value) for value in numbers):
        return None  # not a report we can act on (NaN or infinite load)
    in_flight = named.pop(IN_FLIGHT_METRIC, None)
    limit = named.pop(LIMIT_METRIC, None)
    if in_flight is None:  # not one of ours: express its utilization per 100
        utilization = message.application_utilization or message.cpu_utilization
        in_flight, limit = utilization * 100, 100.0 if utilization else None
    return LoadReport(
        in_flight=round(in_flight),
        limit=round(limit) if limit else None,
        cpu_utilization=message.cpu_utilization,
        rps=message.rps_fractional,
        metrics=named,
    )


_DECODED: dict[bytes, LoadReport | None] = {}
_DECODED_LIMIT = 256


def decode_cached(data: bytes) -> LoadReport | None:
    """``decode``, remembering recent reports: a replica's reports repeat (the same
    calls in flight out of the same limit), and a dict lookup costs less than a parse."""
    try:
        return _DECODED[data]
    except KeyError:
        pass
    if len(_DECODED) >= _DECODED_LIMIT:  # bounded: forget all, the next ones refill it
        _DECODED.clear()
    report = _DECODED[data] = decode(data)
    return report


def from_trailers(trailers: Any) -> LoadReport | None:
    """The load report among response trailers (key, value) pairs, if there is one."""
    for key, value in trailers or ():
        if key in (LOAD_REPORT_KEY, ORCA_REPORT_KEY) and isinstance(value, bytes):
            return decode(value)
    return None


@functools.cache
def _message_class() -> type:
    file = descriptor_pb2.FileDescriptorProto(
        name="localfirst/private/orca_load_report.proto",
        package="xds.data.orca.v3",
        syntax="proto3",
    )
    report = file.message_type.add(name="OrcaLoadReport")
    for name, number, kind in _SCALARS:
        report.field.add(name=name, number=number, type=kind, label=_OPTIONAL)
    for name, number in _MAPS:
        entry = "".join(part.title() for part in name.split("_")) + "Entry"
        nested = report.nested_type.add(name=entry)
        nested.options.map_entry = True
        nested.field.add(name="key", number=1, type=_STRING, label=_OPTIONAL)
        nested.field.add(name="value", number=2, type=_DOUBLE, label=_OPTIONAL)
        report.field.add(
            name=name,
            number=number,
            type=_MESSAGE,
            label=_REPEATED,
            type_name=f".xds.data.orca.v3.OrcaLoadReport.{entry}",
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    cls: type = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("xds.data.orca.v3.OrcaLoadReport")
    )
    return cls

"""Load reports on the wire: ORCA's ``OrcaLoadReport`` in ``endpoint-load-metrics-bin``.

Checked against the real message class of the ``xds-protos`` package (what
grpc-java, grpc-go and Envoy read and write), both ways.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor
from xds.data.orca.v3 import orca_load_report_pb2  # type: ignore[import-untyped]

from protoc_gen_localfirst.runtime import loadreport
from protoc_gen_localfirst.runtime.loadreport import (
    IN_FLIGHT_METRIC,
    LIMIT_METRIC,
    LOAD_REPORT_KEY,
    LoadReport,
    decode,
    encode,
    from_trailers,
)

OrcaLoadReport: Any = orca_load_report_pb2.OrcaLoadReport

OURS = LoadReport(in_flight=3, limit=8, cpu_utilization=0.25, rps=12.5, metrics={"queue": 4.0})


def test_the_private_descriptor_matches_xds() -> None:
    ours: Descriptor = loadreport._message_class().DESCRIPTOR  # type: ignore[attr-defined]
    theirs: Descriptor = OrcaLoadReport.DESCRIPTOR
    assert ours.full_name == theirs.full_name == "xds.data.orca.v3.OrcaLoadReport"
    assert ours.fields, "no fields"
    for field in ours.fields:
        other = theirs.fields_by_name[field.name]
        assert (field.number, field.type, field.is_repeated) == (
            other.number,
            other.type,
            other.is_repeated,
        ), field.name
        if field.message_type is not None:  # a map<string, double>
            assert other.message_type is not None, field.name
            assert field.message_type.GetOptions().map_entry, field.name
            assert other.message_type.GetOptions().map_entry, field.name
            entries = [
                [(f.name, f.number, f.type) for f in entry.fields]
                for entry in (field.message_type, other.message_type)
            ]
            assert entries[0] == entries[1], field.name


@pytest.mark.parametrize(
    "report",
    [
        OURS,
        LoadReport(in_flight=0, limit=1),
        LoadReport(in_flight=7),  # no admission control: no limit
        LoadReport(),
    ],
    ids=["full", "idle-with-limit", "no-limit", "empty"],
)
def test_encode_decode_round_trip(report: LoadReport) -> None:
    assert decode(encode(report)) == report


def test_utilization_is_in_flight_over_limit() -> None:
    assert OURS.utilization == pytest.approx(3 / 8)
    assert LoadReport(in_flight=3).utilization is None
    assert LoadReport(in_flight=2, limit=2).utilization == 1.0


def test_xds_reads_what_we_write() -> None:
    message = OrcaLoadReport.FromString(encode(OURS))
    assert message.cpu_utilization == pytest.approx(0.25)
    assert message.rps_fractional == pytest.approx(12.5)
    assert message.application_utilization == pytest.approx(3 / 8)
    assert dict(message.named_metrics) == {
        "queue": 4.0,
        IN_FLIGHT_METRIC: 3.0,
        LIMIT_METRIC: 8.0,
    }


def test_we_read_what_xds_writes() -> None:
    message = OrcaLoadReport(cpu_utilization=0.5, rps_fractional=3.0)
    message.named_metrics[IN_FLIGHT_METRIC] = 6.0
    message.named_metrics[LIMIT_METRIC] = 10.0
    message.named_metrics["queue"] = 2.0
    message.application_utilization = 0.6
    message.utilization["gpu"] = 0.9  # a field we do not use is skipped, not an error
    message.request_cost["db"] = 12.0
    decoded = decode(message.SerializeToString())
    assert decoded == LoadReport(
        in_flight=6, limit=10, cpu_utilization=0.5, rps=3.0, metrics={"queue": 2.0}
    )
    assert decoded.utilization == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("fields", "utilization"),
    [
        ({"application_utilization": 0.42}, 0.42),
        ({"cpu_utilization": 0.7}, 0.7),
        ({"application_utilization": 0.3, "cpu_utilization": 0.9}, 0.3),  # application wins
    ],
    ids=["application", "cpu-only", "both"],
)
def test_a_foreign_orca_report_decodes_to_a_utilization(
    fields: dict[str, float], utilization: float
) -> None:
    message = OrcaLoadReport(rps_fractional=100.0, **fields)
    message.named_metrics["theirs"] = 1.0
    decoded = decode(message.SerializeToString())
    assert decoded is not None
    assert decoded.utilization == pytest.approx(utilization)
    assert decoded.metrics == {"theirs": 1.0}
    assert decoded.rps == 100.0


def test_a_foreign_report_without_utilization_has_none() -> None:
    decoded = decode(OrcaLoadReport(rps_fractional=5.0).SerializeToString())
    assert decoded is not None and decoded.utilization is None and decoded.rps == 5.0


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\xff\xff\xff\xff",
        b"garbage",
        b"\x08",  # a tag without its value
        b"\x0a\x05abc",  # a length past the end
        b"\x09\x00\x00",  # a truncated double
        bytes(range(256)),
    ],
)
def test_garbage_decodes_to_none(data: bytes) -> None:
    assert decode(data) is None


def _double(field: int, value: float) -> bytes:
    return bytes([field << 3 | 1]) + struct.pack("<d", value)


def _named(name: str, value: float) -> bytes:
    message = OrcaLoadReport()
    message.named_metrics[name] = value
    data: bytes = message.SerializeToString()
    return data


@pytest.mark.parametrize(
    "data",
    [
        _double(9, math.nan),  # application_utilization
        _double(9, math.inf),
        _double(1, math.nan),  # cpu_utilization, when it is the only utilization
        _named(IN_FLIGHT_METRIC, math.nan),
        _named(IN_FLIGHT_METRIC, math.inf),
        _named(LIMIT_METRIC, math.nan) + _named(IN_FLIGHT_METRIC, 1.0),
    ],
    ids=["app-nan", "app-inf", "cpu-nan", "in-flight-nan", "in-flight-inf", "limit-nan"],
)
def test_non_finite_values_do_not_break_decoding(data: bytes) -> None:
    decoded = decode(data)  # raises today
    assert decoded is None or decoded.utilization is None or math.isfinite(decoded.utilization)


def test_from_trailers_finds_the_report_among_other_metadata() -> None:
    trailers = (("localfirst-node", "node-a"), (LOAD_REPORT_KEY, encode(OURS)), ("x", "y"))
    assert from_trailers(trailers) == OURS


def test_from_trailers_ignores_values_that_are_not_bytes() -> None:
    assert from_trailers(((LOAD_REPORT_KEY, "not bytes"),)) is None
    assert from_trailers(((LOAD_REPORT_KEY, 42),)) is None
    # A text value does not hide a real report after it.
    assert from_trailers(((LOAD_REPORT_KEY, "text"), (LOAD_REPORT_KEY, encode(OURS)))) == OURS


def test_from_trailers_without_a_report() -> None:
    assert from_trailers(None) is None
    assert from_trailers(()) is None
    assert from_trailers((("localfirst-node", "node-a"),)) is None

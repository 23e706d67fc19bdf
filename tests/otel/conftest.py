"""OpenTelemetry tests: SDK providers with in-memory readers/exporters, real servers.

The servers are the generated Greeter on the real bootstrap (``start`` and
``greeter`` from the HTTP/3 client tests: TLS on both transports, HTTP/3 on),
with the observer's server interceptor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from protoc_gen_localfirst.otel import OpenTelemetryObserver
from tests.http3.client.conftest import greeter, host, start  # noqa: F401
from tests.support.certs import tls_files  # noqa: F401


@dataclass
class Telemetry:
    observer: OpenTelemetryObserver
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter

    def metrics(self) -> dict[str, tuple[str, list[Any]]]:
        """Metric name -> (unit, data points)."""
        found: dict[str, tuple[str, list[Any]]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = (metric.unit or "", list(metric.data.data_points))
        return found

    def points(self, name: str) -> list[Any]:
        return self.metrics()[name][1]

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    yield Telemetry(OpenTelemetryObserver(meters, tracers), reader, exporter)
    meters.shutdown()
    tracers.shutdown()

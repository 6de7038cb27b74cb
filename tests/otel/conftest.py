"""An OpenTelemetry SDK with in-memory exporters, and a client that reports to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vlens_async import VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.otel import OpenTelemetry


@attrs.define
class Recorded:
    """What one test's OpenTelemetry SDK recorded."""

    telemetry: OpenTelemetry
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans (of that name), in the order they ended."""
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span of that name."""
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def metrics(self) -> dict[str, list[Any]]:
        """Every metric's data points, by metric name."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out

    def counts(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        """A counter's values by its (sorted) attributes."""
        return {
            tuple(sorted(dict(p.attributes or {}).items())): p.value
            for p in self.metrics().get(name, [])
        }


@pytest.fixture
def recorded() -> Recorded:
    """An SDK tracer and meter provider with in-memory exporters, and OpenTelemetry on them."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Recorded(telemetry, tracer_provider, meter_provider, exporter, reader)


@pytest_asyncio.fixture
async def traced_client(
    vlens_emulator: RunningEmulator, recorded: Recorded
) -> AsyncIterator[VlensClient]:
    """A client for the emulator that reports to ``recorded``."""
    async with VlensClient(
        vlens_emulator.api_key, base_url=vlens_emulator.base_url, telemetry=recorded.telemetry
    ) as client:
        yield client

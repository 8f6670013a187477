"""seedguard[otel]: one span per apply() call, one per unit that runs, metrics for units
applied and lock waits, through the globally configured providers (the SDK's in-memory
exporters here). Nothing is installed by hand: importing OpenTelemetry switches it on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _support import TestDatabase, failing, registry_of, unit
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import seedguard
from seedguard.registry import Registry


class Telemetry:
    def __init__(self, spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self.exporter = spans
        self.reader = reader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def applied(self, unit_name: str) -> int:
        return sum(p.value for p in self.points("seedguard.units.applied")
                   if p.attributes.get("seedguard.unit.name") == unit_name)

    def lock_waits(self) -> tuple[int, float]:
        points = self.points("seedguard.lock.wait")
        return sum(p.count for p in points), sum(p.sum for p in points)


_providers: dict[str, Any] = {}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    # Global providers can be set once per process: set them on first use.
    if not _providers:
        tracer_provider = TracerProvider()
        exporter = InMemorySpanExporter()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _providers.update(exporter=exporter, reader=reader)
    found = Telemetry(_providers["exporter"], _providers["reader"])
    found.exporter.clear()
    yield found
    found.exporter.clear()



def test_one_apply_span_and_one_unit_span_per_unit_that_runs(
        db: TestDatabase, telemetry: Telemetry) -> None:
    db.create_effects_table()
    name_a, name_b = f"a-{db.kind}", f"b-{db.kind}"
    waits_before = telemetry.lock_waits()
    seedguard.apply(db.url, seeds=registry_of(unit(name_a), unit(name_b, version=3)))
    spans = telemetry.spans()
    assert sorted(s.name for s in spans) == ["seedguard.apply", "seedguard.unit",
                                              "seedguard.unit"]
    apply_span = next(s for s in spans if s.name == "seedguard.apply")
    units = [s for s in spans if s.name == "seedguard.unit"]
    assert [(s.attributes["seedguard.unit.name"], s.attributes["seedguard.unit.version"])
            for s in units] == [(name_a, 1), (name_b, 3)]
    for span in units:  # children of the run's span, in its trace
        assert span.parent is not None and span.parent.span_id == apply_span.context.span_id
        assert span.context.trace_id == apply_span.context.trace_id
        assert span.status.status_code != StatusCode.ERROR
    assert apply_span.status.status_code != StatusCode.ERROR
    assert apply_span.attributes["seedguard.units.applied"] == 2
    assert telemetry.applied(name_a) == 1 and telemetry.applied(name_b) == 1
    # One recording per lock acquisition; nobody else held the locks.
    count, total = telemetry.lock_waits()
    assert count - waits_before[0] == 1
    assert 0 <= total - waits_before[1] < 5


def test_a_start_up_with_nothing_to_do_costs_one_span(
        db: TestDatabase, telemetry: Telemetry) -> None:
    db.create_effects_table()
    seeds = registry_of(*(unit(f"u{i}-{db.kind}") for i in range(20)))
    seedguard.apply(db.url, seeds=seeds)
    telemetry.exporter.clear()
    waits_before = telemetry.lock_waits()
    result = seedguard.apply(db.url, seeds=seeds)
    assert len(result.skipped) == 20
    assert [s.name for s in telemetry.spans()] == ["seedguard.apply"]
    # No lock was taken, so no wait was recorded; nothing was applied again.
    assert telemetry.lock_waits() == waits_before
    assert telemetry.applied(f"u0-{db.kind}") == 1


def test_a_failed_unit_has_an_error_span_and_so_has_the_run(
        db: TestDatabase, telemetry: Telemetry) -> None:
    db.create_effects_table()
    name = f"bad-{db.kind}"
    with pytest.raises(seedguard.SeedFailed):
        seedguard.apply(db.url, seeds=registry_of(unit(name, fn=failing)))
    spans = {s.name: s for s in telemetry.spans()}
    assert set(spans) == {"seedguard.apply", "seedguard.unit"}
    failed = spans["seedguard.unit"]
    assert failed.status.status_code == StatusCode.ERROR
    assert "boom" in (failed.status.description or "")
    assert [e.name for e in failed.events] == ["exception"]
    assert failed.events[0].attributes is not None
    assert failed.events[0].attributes["exception.type"] == "seedguard.errors.SeedFailed"
    assert spans["seedguard.apply"].status.status_code == StatusCode.ERROR
    assert telemetry.applied(name) == 0


def test_a_data_seed_span_says_how_many_rows(db: TestDatabase, telemetry: Telemetry) -> None:
    db.execute("CREATE TABLE colours (code VARCHAR(20) PRIMARY KEY, label VARCHAR(50))")
    rows = [{"code": f"c{i}", "label": f"colour {i}"} for i in range(7)]
    seeds = Registry()
    seeds.add(seedguard.data_seed(f"colours-{db.kind}", table="colours", key="code", rows=rows))
    seedguard.apply(db.url, seeds=seeds)
    (span,) = [s for s in telemetry.spans() if s.name == "seedguard.unit"]
    assert span.attributes is not None
    assert span.attributes["seedguard.unit.rows"] == 7

"""What events and telemetry add to a warm no-op start-up (nothing pending).

Side by side in one process, on one SQLite database with 50 applied units,
interleaved call by call so that the machine's drift hits all alike:

- the warm no-op ``apply()`` with no subscriber (what every start-up pays);
- the per-run event machinery alone, as that call runs it (a ``Run``, the log
  context, the quiet checks): its share of the call is the cost of events
  when nobody listens;
- the warm no-op with one trivial subscriber (RunStarted and RunFinished
  delivered);
- the warm no-op with OpenTelemetry's SDK configured (one ``seedguard.apply``
  span per call, into an in-memory exporter).

Run: ``python bench/events.py`` (standalone; needs the ``otel`` and ``test``
extras for the SDK).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from _common import Report, Row, fresh_database, median_time, ms, timed, write_seeds_module

UNITS = 50
ROUNDS = 301
SEEDS = "bench_events_seeds"


def main() -> None:
    import sqlalchemy as sa
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import seedguard
    from seedguard import events, otel

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    otel.uninstall()  # on only for its own calls below

    report = Report()
    with tempfile.TemporaryDirectory() as tmp, fresh_database("sqlite") as url:
        write_seeds_module(Path(tmp), SEEDS, UNITS)
        sys.path.insert(0, tmp)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE effects (unit VARCHAR(255))")
        seedguard.apply(engine, seeds=SEEDS)

        def noop() -> None:
            seedguard.apply(engine, seeds=SEEDS)

        def machinery() -> None:
            with events.Run(None) as run:
                if not run.quiet:
                    raise AssertionError("a subscriber is installed")
                if not run.quiet:
                    raise AssertionError("a subscriber is installed")

        quiet: list[float] = []
        subscribed: list[float] = []
        traced: list[float] = []
        for _ in range(5):
            noop()
        for _ in range(ROUNDS):
            quiet.append(timed(noop))
            unsubscribe = events.subscribe(lambda event: None)
            subscribed.append(timed(noop))
            unsubscribe()
            otel.install()
            traced.append(timed(noop))
            otel.uninstall()
        alone = median_time(machinery, ROUNDS * 10, warmup=50)
        base = statistics.median(quiet)
        report.add(Row("events", "sqlite", f"event machinery per no-op run, {UNITS} units",
                       f"{alone * 1e6:.1f} us", ms(base), alone / base,
                       note=f"{100 * alone / base:.2f}% of the warm no-op apply() with no "
                            "subscriber"))
        with_one = statistics.median(subscribed)
        report.add(Row("events", "sqlite", "warm no-op with one subscriber", ms(with_one),
                       ms(base), with_one / base))
        with_otel = statistics.median(traced)
        spans = len(exporter.get_finished_spans())
        report.add(Row("events", "sqlite", "warm no-op with OpenTelemetry's SDK",
                       ms(with_otel), ms(base), with_otel / base,
                       note=f"{spans} spans for {ROUNDS} traced calls"))
        engine.dispose()
    print()
    print(report.table())


if __name__ == "__main__":
    main()

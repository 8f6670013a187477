"""data_seed on each database: CSV/JSON/rows, re-apply on change, no-op when unchanged,
prune, bad data naming file/line/column, dry-run counts, progress events."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _support import TestDatabase, write_module

import seedguard
from seedguard import DataError, UpsertResult
from seedguard.data import convert, sources, spec
from seedguard.data.iso310 import ISO_310
from seedguard.events import Event, UnitProgress

metadata = sa.MetaData()
countries = sa.Table(
    "countries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(2), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("population", sa.BigInteger),
    sa.Column("area", sa.Numeric(12, 2)),
    sa.Column("eu", sa.Boolean),
    sa.Column("joined", sa.Date),
)
CSV = """code,name,population,area,eu,joined
fr,France,68000000,551695.50,true,1958-01-01
de,Germany,84000000,357588.00,yes,1958-01-01
no,Norway,5500000,,false,
"""


@pytest.fixture
def engine(db: TestDatabase) -> Iterator[sa.Engine]:
    engine = db.engine()
    metadata.create_all(engine)
    yield engine


def content(engine: sa.Engine) -> list[tuple[Any, ...]]:
    cols = [countries.c[c] for c in ("code", "name", "population", "area", "eu", "joined")]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(countries.c.code))]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_seed_converts_values_to_column_types(db: TestDatabase, engine: sa.Engine) -> None:
    path = write(db.tmp_path / "countries.csv", CSV)
    unit = seedguard.data_seed("countries", table=countries, key="code", path=path)

    result = seedguard.apply(db.url, seeds=[unit])

    assert [u.name for u in result.applied] == ["countries"]
    assert content(engine) == [
        ("de", "Germany", 84000000, decimal.Decimal("357588.00"), True, dt.date(1958, 1, 1)),
        ("fr", "France", 68000000, decimal.Decimal("551695.50"), True, dt.date(1958, 1, 1)),
        ("no", "Norway", 5500000, None, False, None),
    ]
    assert db.ledger() == [("countries", 1)]
    checksum = db.execute("SELECT checksum FROM seedguard_ledger")[0][0]
    assert checksum.startswith("sha256:")


def test_json_seed_and_table_by_name(db: TestDatabase, engine: sa.Engine) -> None:
    items = [{"code": "fr", "name": "France", "population": 68000000, "area": 551695.5,
              "eu": True, "joined": "1958-01-01"},
             {"code": "no", "name": "Norway", "population": None, "area": None, "eu": False,
              "joined": None}]
    path = write(db.tmp_path / "countries.json", json.dumps(items, indent=2))
    unit = seedguard.data_seed("countries", table="countries", key="code", path=path)

    seedguard.apply(db.url, seeds=[unit])

    assert content(engine) == [
        ("fr", "France", 68000000, decimal.Decimal("551695.50"), True, dt.date(1958, 1, 1)),
        ("no", "Norway", None, None, False, None),
    ]


def test_rows_seed(db: TestDatabase, engine: sa.Engine) -> None:
    unit = seedguard.data_seed("countries", table=countries, key="code",
                               rows=[{"code": "fr", "name": "France"}])
    seedguard.apply(db.url, seeds=[unit])
    assert [r[:2] for r in content(engine)] == [("fr", "France")]


def test_changed_file_reapplies_and_unchanged_file_is_a_no_op(db: TestDatabase,
                                                              engine: sa.Engine) -> None:
    path = write(db.tmp_path / "countries.csv", CSV)
    declare = lambda: seedguard.data_seed(  # noqa: E731
        "countries", table=countries, key="code", path=path)
    seedguard.apply(db.url, seeds=[declare()])
    ids = {code: i for i, code in db.execute("SELECT id, code FROM countries")}

    unchanged = seedguard.apply(db.url, seeds=[declare()])
    write(path, CSV.replace("Norway", "Norge") + "se,Sweden,10500000,,true,1995-01-01\n")
    changed = seedguard.apply(db.url, seeds=[declare()])
    again = seedguard.apply(db.url, seeds=[declare()])

    assert unchanged.applied == [] and [u.name for u in unchanged.skipped] == ["countries"]
    assert [u.name for u in changed.applied] == ["countries"]
    assert again.applied == []
    assert [(r[0], r[1]) for r in content(engine)] == [
        ("de", "Germany"), ("fr", "France"), ("no", "Norge"), ("se", "Sweden")]
    # Updated in place: the ids of existing rows stay.
    assert {code: i for i, code in db.execute("SELECT id, code FROM countries")
            if code in ids} == ids
    # One ledger row, re-recorded with the new checksum.
    assert db.ledger() == [("countries", 1)]


def test_unchanged_file_writes_nothing(db: TestDatabase, engine: sa.Engine) -> None:
    path = write(db.tmp_path / "countries.csv", CSV)
    unit = seedguard.data_seed("countries", table=countries, key="code", path=path)
    seedguard.apply(db.url, seeds=[unit])
    db.execute("UPDATE countries SET name = 'edited by hand' WHERE code = 'fr'")

    seedguard.apply(db.url, seeds=[unit])

    # Had the unit run again it would have restored the name from the file.
    assert ("fr", "edited by hand") in [(r[0], r[1]) for r in content(engine)]


def test_explicit_version_does_not_rerun_on_change(db: TestDatabase, engine: sa.Engine) -> None:
    path = write(db.tmp_path / "countries.csv", CSV)
    seedguard.apply(db.url, seeds=[seedguard.data_seed(
        "countries", table=countries, key="code", path=path, version=1)])
    write(path, CSV.replace("Norway", "Norge"))

    result = seedguard.apply(db.url, seeds=[seedguard.data_seed(
        "countries", table=countries, key="code", path=path, version=1)])
    bumped = seedguard.apply(db.url, seeds=[seedguard.data_seed(
        "countries", table=countries, key="code", path=path, version=2)])

    assert result.applied == [] and [d.name for d in result.drifted] == ["countries"]
    assert [u.name for u in bumped.applied] == ["countries"]
    assert db.ledger() == [("countries", 1), ("countries", 2)]


def test_prune_deletes_only_rows_missing_from_the_data(db: TestDatabase,
                                                       engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(countries.insert(), [{"code": "xx", "name": "Gone"},
                                          {"code": "fr", "name": "Old France"}])
    path = write(db.tmp_path / "countries.csv", CSV)
    unit = seedguard.data_seed("countries", table=countries, key="code", path=path, prune=True)

    preview = seedguard.apply(db.url, seeds=[unit], dry_run=True).previews["countries"]
    seedguard.apply(db.url, seeds=[unit])

    assert preview == UpsertResult(inserted=2, updated=1, unchanged=0, deleted=1)
    assert [(r[0], r[1]) for r in content(engine)] == [
        ("de", "Germany"), ("fr", "France"), ("no", "Norway")]


def test_without_prune_extra_rows_stay(db: TestDatabase, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(countries.insert(), [{"code": "xx", "name": "Kept"}])
    path = write(db.tmp_path / "countries.csv", CSV)
    seedguard.apply(db.url, seeds=[seedguard.data_seed("countries", table=countries,
                                                       key="code", path=path)])
    assert ("xx", "Kept") in [(r[0], r[1]) for r in content(engine)]


def test_dry_run_counts_and_writes_nothing(db: TestDatabase, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(countries.insert(), [{"code": "fr", "name": "France", "population":
                                           68000000, "area": decimal.Decimal("551695.50"),
                                           "eu": True, "joined": dt.date(1958, 1, 1)}])
        conn.execute(countries.insert(), [{"code": "de", "name": "Deutschland"}])
    path = write(db.tmp_path / "countries.csv", CSV)
    unit = seedguard.data_seed("countries", table=countries, key="code", path=path)

    result = seedguard.apply(db.url, seeds=[unit], dry_run=True)

    assert [u.name for u in result.pending] == ["countries"]
    assert result.previews["countries"] == UpsertResult(inserted=1, updated=1, unchanged=1)
    assert [r[0] for r in content(engine)] == ["de", "fr"]
    assert db.ledger() == []


def test_dry_run_before_the_table_exists_counts_inserts(db: TestDatabase) -> None:
    path = write(db.tmp_path / "countries.csv", CSV)
    unit = seedguard.data_seed("countries", table="countries", key="code", path=path)
    result = seedguard.apply(db.url, seeds=[unit], dry_run=True)
    assert result.previews["countries"] == UpsertResult(inserted=3, table_missing=True)


def _failure(db: TestDatabase, name: str, text: str) -> DataError:
    path = write(db.tmp_path / name, text)
    unit = seedguard.data_seed("countries", table=countries, key="code", path=path)
    # Bad data fails the unit like any error of its work: SeedFailed (the
    # unit's transaction rolled back), the DataError with the place in the
    # data as its cause, and the place in the one-line message too.
    with pytest.raises(seedguard.SeedFailed) as info:
        seedguard.apply(db.url, seeds=[unit])
    err = info.value.__cause__
    assert isinstance(err, DataError)
    assert info.value.unit.name == "countries"
    assert err.path == str(path)
    assert str(path) in str(info.value)
    assert db.ledger() == []
    return err


def test_bad_csv_value_names_file_line_and_column(db: TestDatabase, engine: sa.Engine) -> None:
    err = _failure(db, "bad.csv", CSV.replace("5500000", "lots"))
    assert (err.line, err.column) == (4, "population")
    assert f"{err.path}:4: column 'population': cannot convert 'lots'" in str(err)
    assert content(engine) == []  # the rows before it were rolled back with the unit


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    (CSV.replace("1958-01-01\nde", "1958-13-01\nde"), 2, "joined", "cannot convert '1958-13-01'"),
    (CSV.replace(",yes,", ",maybe,"), 3, "eu", "expected true/false"),
    (CSV.replace("code,name", "code,nom"), 1, "nom", "'nom' is not a column of table"),
    (CSV + "dk,Denmark\n", 5, "", "2 fields, the header has 6"),
])
def test_bad_csv_errors(db: TestDatabase, engine: sa.Engine, text: str, line: int, column: str,
                        message: str) -> None:
    err = _failure(db, "bad.csv", text)
    assert (err.line, err.column) == (line, column)
    assert message in str(err)


def test_bad_json_value_names_line(db: TestDatabase, engine: sa.Engine) -> None:
    items = [{"code": "fr", "name": "France"}, {"code": "de", "name": "Germany",
                                                 "population": "many"}]
    err = _failure(db, "bad.json", json.dumps(items, indent=1))
    assert (err.line, err.column) == (6, "population")
    err = _failure(db, "broken.json", '[{"code": "fr", "name": "France"},\n {"code": ')
    assert err.line == 2 and "invalid JSON" in str(err)
    err = _failure(db, "scalar.json", '[{"code": "fr", "name": "France"},\n 3]')
    assert "expected an object" in str(err)


def test_missing_file_and_both_sources_are_reported(db: TestDatabase) -> None:
    unit = seedguard.data_seed("countries", table=countries, key="code",
                               path=db.tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"missing\.csv not found"):
        seedguard.apply(db.url, seeds=[unit])
    with pytest.raises(seedguard.DefinitionError, match="exactly one of rows= or path="):
        seedguard.data_seed("x", table=countries, key="code", rows=[], path="x.csv")
    with pytest.raises(seedguard.DefinitionError, match=r"use a \.csv file"):
        seedguard.data_seed("x", table=countries, key="code", path="x.txt")


def test_progress_events_reach_the_listener(db: TestDatabase, engine: sa.Engine,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(spec, "BATCH_SIZE", 2)
    monkeypatch.setattr("seedguard.events.PROGRESS_LOG_SECONDS", 0.0)
    path = write(db.tmp_path / "countries.csv", CSV)
    unit = seedguard.data_seed("countries", table=countries, key="code", path=path)
    events: list[Event] = []

    with caplog.at_level(logging.INFO, logger="seedguard.progress"):
        seedguard.apply(db.url, seeds=[unit], on_event=events.append)

    progress = [(e.done, e.total) for e in events if isinstance(e, UnitProgress)]
    assert progress == [(2, 3), (3, 3)]
    assert "countries: 3 / 3 (100%)" in caplog.text


def test_json_stream_decoder_across_small_blocks(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"i": i, "s": "x" * (i % 7), "n": [1, 2.5, None], "f": 1.25e3} for i in range(50)]
    path = write(tmp_path / "items.json", json.dumps(items, indent=2))
    monkeypatch.setattr(sources, "_BLOCK", 7)

    decoded = list(sources.json_items(path, "utf-8"))

    assert [item for _, item in decoded] == items
    lines = path.read_text().splitlines()
    assert all(lines[line - 1].strip() == "{" for line, _ in decoded)
    write(tmp_path / "empty.json", " [ ] ")
    assert list(sources.json_items(tmp_path / "empty.json", "utf-8")) == []


def test_relative_path_and_redeclaration_from_a_seeds_module(db: TestDatabase,
                                                              engine: sa.Engine) -> None:
    package = db.tmp_path / "pkg"
    write_module(db.tmp_path, "pkg.seeds", """
        import seedguard
        seedguard.data_seed("countries", table="countries", key="code",
                            path="data/countries.csv")
        """)
    (package / "data").mkdir()
    write(package / "data" / "countries.csv", CSV)


    sys.path.insert(0, str(db.tmp_path))
    try:
        result = seedguard.apply(db.url, seeds="pkg.seeds")
        # Declaring the same seed again (a module imported twice) replaces it.
        exec(compile((package / "seeds.py").read_text(), str(package / "seeds.py"), "exec"),
             {"__name__": "pkg.seeds"})
    finally:
        sys.path.remove(str(db.tmp_path))
        for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
            del sys.modules[name]
    assert [u.name for u in result.applied] == ["countries"]
    assert len(content(engine)) == 3


UTC = dt.timezone.utc


@pytest.mark.parametrize(("kind", "text", "expected"), [
    (dt.datetime, "2024-01-01T12:00:00Z", dt.datetime(2024, 1, 1, 12, tzinfo=UTC)),
    (dt.datetime, "2024-01-01 12:00:00+02:00",
     dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    (dt.datetime, "2024-01-02T12:30:15-08",
     dt.datetime(2024, 1, 2, 12, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=-8)))),
    (dt.datetime, "2024-01-02T12:00:00,123456+0530",
     dt.datetime(2024, 1, 2, 12, 0, 0, 123456,
                 tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))),
    (dt.datetime, "20240102T120000", dt.datetime(2024, 1, 2, 12)),
    (dt.datetime, "20240102", dt.datetime(2024, 1, 2)),
    (dt.datetime, "2024-01-02", dt.datetime(2024, 1, 2)),
    (dt.datetime, "2024-01-02T12", dt.datetime(2024, 1, 2, 12)),
    (dt.datetime, "2024-01-02T1230", dt.datetime(2024, 1, 2, 12, 30)),
    (dt.datetime, "2024-01-02T12:00:00.5", dt.datetime(2024, 1, 2, 12, 0, 0, 500000)),
    (dt.datetime, "2024-01-02T12:30:15.1234567", dt.datetime(2024, 1, 2, 12, 30, 15, 123456)),
    (dt.datetime, "2024-W01-2T08:00", dt.datetime(2024, 1, 2, 8)),
    (dt.date, "20240102", dt.date(2024, 1, 2)),
    (dt.date, "2024-01-02", dt.date(2024, 1, 2)),
    (dt.date, "2024-W01-2", dt.date(2024, 1, 2)),
    (dt.date, "2024W01", dt.date(2024, 1, 1)),
    (dt.time, "12:30:15Z", dt.time(12, 30, 15, tzinfo=UTC)),
    (dt.time, "123015", dt.time(12, 30, 15)),
    (dt.time, "T12:30", dt.time(12, 30)),
    (dt.time, "12:30:15.25+01:00",
     dt.time(12, 30, 15, 250000, tzinfo=dt.timezone(dt.timedelta(hours=1)))),
])
def test_iso_dates_and_times_read_the_same_on_every_python(kind: type[Any], text: str,
                                                           expected: Any) -> None:
    # Python 3.11 widened fromisoformat to most of ISO 8601; 3.10 reads only
    # its own isoformat() output, so these fail there unless seedguard parses them.
    assert convert._iso(kind)(text) == expected
    assert ISO_310[kind](text) == expected  # what 3.10 runs, on whatever runs this


@pytest.mark.parametrize(("kind", "text"), [
    (dt.date, "2024-1-2"), (dt.date, "2024-01-02T00:00"), (dt.datetime, "2024-0102"),
    (dt.datetime, "2024-01-02T12:3015"), (dt.time, "24:00"), (dt.date, "2024-13-01"),
    (dt.datetime, "2024-01-02T12:00:00+25:00"), (dt.datetime, "yesterday"),
])
def test_malformed_iso_values_fail_on_every_python(kind: type[Any], text: str) -> None:
    with pytest.raises(ValueError):
        convert._iso(kind)(text)
    with pytest.raises(ValueError):
        ISO_310[kind](text)


def test_basic_format_dates_in_a_csv(db: TestDatabase, engine: sa.Engine) -> None:
    path = write(db.tmp_path / "countries.csv", CSV.replace("1958-01-01", "19580101"))
    seedguard.apply(db.url, seeds=[seedguard.data_seed("countries", table=countries,
                                                       key="code", path=path)])
    assert [r[5] for r in content(engine)] == [dt.date(1958, 1, 1), dt.date(1958, 1, 1), None]

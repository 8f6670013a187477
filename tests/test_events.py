"""seedguard.events: what a subscriber sees of applied, skipped and failed runs, and the
run and unit on every log record seedguard emits during a run."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import TestDatabase, child_env, failing, registry_of, unit, write_module

import seedguard
from seedguard import events


class Recorder:
    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        out = []
        for event in self.events:
            name = type(event).__name__
            item = getattr(event, "unit", None)
            out.append(f"{name}:{item.name}" if item is not None else name)
        return out


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    unsubscribe = events.subscribe(rec)
    yield rec
    unsubscribe()



def test_an_applied_run_sends_run_lock_and_unit_events_in_order(
        db: TestDatabase, recorder: Recorder) -> None:
    db.create_effects_table()
    result = seedguard.apply(db.url, seeds=registry_of(unit("a"), unit("b", after=["a"])))
    assert [a.name for a in result.applied] == ["a", "b"]
    assert recorder.kinds() == [
        "RunStarted", "LockWaiting", "LockAcquired",
        "UnitStarted:a", "UnitFinished:a", "UnitStarted:b", "UnitFinished:b",
        "RunFinished",
    ]
    started, finished = recorder.events[0], recorder.events[-1]
    assert isinstance(started, events.RunStarted) and started.units == 2
    assert isinstance(finished, events.RunFinished)
    assert finished.error is None and finished.result is result
    # Every event of the run carries its id.
    assert {e.run for e in recorder.events} == {started.run}
    done = [e for e in recorder.events if isinstance(e, events.UnitFinished)]
    assert [e.duration_ms for e in done] == [a.duration_ms for a in result.applied]
    acquired = next(e for e in recorder.events if isinstance(e, events.LockAcquired))
    # Nobody else held the locks: taking them is a connection and a query or two.
    assert 0 <= acquired.wait_seconds < 5


def test_a_run_with_nothing_to_do_sends_only_run_started_and_finished(
        db: TestDatabase, recorder: Recorder) -> None:
    db.create_effects_table()
    seeds = registry_of(unit("a"), unit("b"))
    seedguard.apply(db.url, seeds=seeds)
    recorder.events.clear()
    result = seedguard.apply(db.url, seeds=seeds)
    assert [u.name for u in result.skipped] == ["a", "b"]
    assert recorder.kinds() == ["RunStarted", "RunFinished"]


def test_a_failed_unit_sends_unit_failed_and_a_run_finished_with_the_error(
        db: TestDatabase, recorder: Recorder) -> None:
    db.create_effects_table()
    seeds = registry_of(unit("a"), unit("b", after=["a"], fn=failing), unit("c", after=["b"]))
    with pytest.raises(seedguard.SeedFailed) as caught:
        seedguard.apply(db.url, seeds=seeds)
    assert recorder.kinds() == [
        "RunStarted", "LockWaiting", "LockAcquired",
        "UnitStarted:a", "UnitFinished:a", "UnitStarted:b", "UnitFailed:b", "RunFinished",
    ]
    failed = recorder.events[-2]
    assert isinstance(failed, events.UnitFailed)
    assert failed.error is caught.value and failed.duration_ms >= 0
    assert isinstance(failed.error.__cause__, RuntimeError)
    finished = recorder.events[-1]
    assert isinstance(finished, events.RunFinished)
    assert finished.error is caught.value and finished.result is None
    assert db.ledger() == [("a", 1)]


def test_the_runs_own_listener_gets_its_unit_events(db: TestDatabase) -> None:
    db.create_effects_table()
    own = Recorder()
    with pytest.raises(seedguard.SeedFailed):
        seedguard.apply(db.url, seeds=registry_of(unit("a"), unit("b", after=["a"], fn=failing)),
                        on_event=own)
    assert own.kinds() == ["UnitStarted:a", "UnitFinished:a", "UnitStarted:b", "UnitFailed:b"]


def test_a_subscriber_that_raises_is_logged_and_the_run_goes_on(
        db: TestDatabase, recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    db.create_effects_table()

    def broken(event: events.Event) -> None:
        raise ValueError("hook bug")

    unsubscribe = events.subscribe(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="seedguard.events"):
            result = seedguard.apply(db.url, seeds=registry_of(unit("a")))
    finally:
        unsubscribe()
    assert [a.name for a in result.applied] == ["a"]
    assert db.effects() == ["a"]
    # The subscriber after it still got everything.
    assert recorder.kinds()[-1] == "RunFinished"
    logged = [r for r in caplog.records if r.name == "seedguard.events"]
    assert len(logged) == len(recorder.events)
    assert "the run goes on" in logged[0].getMessage()
    assert logged[0].exc_info is not None and "hook bug" in str(logged[0].exc_info[1])


def test_unsubscribe_stops_the_events(db: TestDatabase) -> None:
    db.create_effects_table()
    rec = Recorder()
    unsubscribe = events.subscribe(rec)
    unsubscribe()
    unsubscribe()  # twice is fine
    seedguard.apply(db.url, seeds=registry_of(unit("a")))
    assert rec.events == []


def test_every_log_record_of_a_run_carries_the_run_and_the_unit(
        db: TestDatabase, recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    db.create_effects_table()

    def chatty(session: Any) -> None:
        logging.getLogger("seedguard.user_hook").info("inside the unit")
        seedguard.report_progress(1, 1)

    with caplog.at_level(logging.DEBUG, logger="seedguard"):
        seedguard.apply(db.url, seeds=registry_of(unit("a", fn=chatty), unit("b")))
    run_id = recorder.events[0].run  # type: ignore[union-attr]
    ours = [r for r in caplog.records if r.name.startswith("seedguard")]
    assert ours, "the run logged nothing at DEBUG"
    assert {getattr(r, "seedguard_run", None) for r in ours} == {run_id}
    by_message = {r.getMessage(): r for r in ours}
    assert by_message["inside the unit"].seedguard_unit == "a"
    assert by_message["applying a v1"].seedguard_unit == "a"
    assert by_message["applying b v1"].seedguard_unit == "b"
    # Between units (taking locks, reading the ledger) the field is there, as None.
    assert {getattr(r, "seedguard_unit", "missing") for r in ours} <= {None, "a", "b"}
    # Outside a run nothing is added.
    logging.getLogger("seedguard.user_hook").warning("after the run")
    after = caplog.records[-1]
    assert not hasattr(after, "seedguard_run")


HOLDER_SEEDS = """
import os, time
import seedguard

@seedguard.seed("slow")
def slow(session):
    open(os.environ["STARTED_FILE"], "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["RELEASE_FILE"]) and time.monotonic() < deadline:
        time.sleep(0.02)
"""
HOLDER = "import sys, seedguard; seedguard.apply(sys.argv[1], seeds=sys.argv[2])"


def _until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_lock_acquired_says_how_long_another_applier_kept_this_one_waiting(
        db: TestDatabase, recorder: Recorder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = f"holder_seeds_{uuid.uuid4().hex[:8]}"  # sys.modules outlives a test
    write_module(tmp_path, seeds, HOLDER_SEEDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    started, release = tmp_path / "started", tmp_path / "release"
    env = child_env(tmp_path)
    env.update(STARTED_FILE=str(started), RELEASE_FILE=str(release))
    child = subprocess.Popen([sys.executable, "-c", HOLDER, db.url, seeds], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcome: list[Any] = []
    waiter = threading.Thread(target=lambda: outcome.append(
        _outcome(lambda: seedguard.apply(db.url, seeds=seeds))))
    try:
        _until(lambda: started.exists() or child.poll() is not None, "the holder's unit")
        assert child.poll() is None, child.communicate()
        waiter.start()
        _until(lambda: any(isinstance(e, events.LockWaiting) for e in recorder.events)
               or not waiter.is_alive(), "LockWaiting")
        assert waiter.is_alive(), (outcome, recorder.kinds())
        time.sleep(1.0)  # the holder keeps this applier waiting at least this long
    finally:
        release.touch()
        _out, err = child.communicate(timeout=60)
        if waiter.is_alive() or waiter.ident is not None:
            waiter.join(timeout=60)
    assert child.returncode == 0, err
    result = outcome[0]
    assert isinstance(result, seedguard.ApplyResult), result
    assert result.applied == []  # the holder did it
    acquired = [e for e in recorder.events if isinstance(e, events.LockAcquired)]
    assert len(acquired) == 1, recorder.kinds()
    assert acquired[0].wait_seconds >= 1.0
    assert db.ledger() == [("slow", 1)]


def _outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as err:
        return err

"""`seedguard upgrade/status/check` over a fleet, as real processes: --schemas,
--urls-file, --shard, --json, exit codes, and runners racing on one fleet."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import EFFECTS_DDL, TestDatabase, child_env, seeds_source, write_module
from test_fleet import Fleet, make_fleet

from seedguard.fleet import shard

SCRIPT = Path(sys.executable).with_name("seedguard")


@pytest.fixture
def fleet(server_db: TestDatabase) -> Iterator[Fleet]:
    yield from make_fleet(server_db, 4)


def run(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], cwd=work, env=child_env(work),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pattern(fleet: Fleet) -> str:
    # The names are <prefix>_<n>; "_" is LIKE's any-character, which is fine here.
    return fleet.names[0].rsplit("_", 1)[0] + "_%"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    write_module(folder, "fleet_seeds", seeds_source(["roles", "admin"]))
    return folder


def test_check_upgrade_check_over_schemas(fleet: Fleet, work: Path) -> None:
    common = ["--url", fleet.db.url, "--seeds", "fleet_seeds"]
    broken = fleet.names[2]
    fleet.sql(f"DROP TABLE {broken}.effects")

    before = run(work, *common, "check", "--schemas", pattern(fleet))
    assert before.returncode == 3, before.stderr
    assert f"{fleet.names[0]}: pending roles, pending admin" in before.stdout

    upgrade = run(work, *common, "upgrade", "--schemas", pattern(fleet), "--workers", "2")
    assert upgrade.returncode == 1, upgrade.stderr
    failed = [line for line in upgrade.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {broken}: unit 'roles'")
    assert "4 target(s): applied 6 unit(s) to 3 target(s)" in upgrade.stdout
    for name in fleet.names:
        if name != broken:
            assert fleet.effects(name) == ["admin", "roles"]

    document = json.loads(run(work, *common, "check", "--schemas", pattern(fleet),
                              "--json").stdout)
    assert document["exit_code"] == 3 and not document["ok"]
    assert [(t["target"], t["outcome"]) for t in document["targets"]] == [
        (name, "up-to-date") for name in fleet.names if name != broken] + [(broken, "pending")]

    fleet.sql(EFFECTS_DDL.replace("TABLE effects", f"TABLE {broken}.effects"))
    again = run(work, *common, "upgrade", "--schemas", pattern(fleet), "--json")
    assert again.returncode == 0, again.stdout
    outcomes = {t["target"]: t["outcome"] for t in json.loads(again.stdout)["targets"]}
    assert outcomes == {name: ("applied" if name == broken else "up-to-date")
                        for name in fleet.names}
    final = run(work, *common, "check", "--schemas", pattern(fleet))
    assert final.returncode == 0, final.stdout + final.stderr
    assert "4 target(s): 4 up to date, 0 not, 0 failed" in final.stdout


def test_urls_file_with_comments_and_a_missing_database(work: Path, tmp_path: Path) -> None:
    import sqlalchemy as sa

    urls = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(EFFECTS_DDL)
        engine.dispose()
        urls.append(url)
    missing = tmp_path / "missing.db"
    listing = work / "urls.txt"
    listing.write_text(f"# the fleet\n{urls[0]}   # first\n\n  {urls[1]}\n")
    upgrade = run(work, "--seeds", "fleet_seeds", "upgrade", "--urls-file", str(listing))
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "2 target(s): applied 4 unit(s) to 2 target(s)" in upgrade.stdout

    listing.write_text(f"{urls[0]}\nsqlite:///{missing}\n")
    check = run(work, "--seeds", "fleet_seeds", "check", "--urls-file", str(listing), "--json")
    document = json.loads(check.stdout)
    assert check.returncode == 1 and document["exit_code"] == 1
    outcomes = [t["outcome"] for t in document["targets"]]
    assert outcomes == ["up-to-date", "failed"]
    assert not missing.exists()  # reading never creates a database


def test_shard_is_a_stable_partition() -> None:
    labels = [f"tenant_{index}" for index in range(200)]
    parts = [shard(labels, index, 4) for index in range(4)]
    assert sorted(label for part in parts for label in part) == sorted(labels)
    assert all(30 < len(part) < 70 for part in parts), [len(part) for part in parts]
    # Independent of the order each runner lists the fleet in.
    assert shard(list(reversed(labels)), 1, 4) == list(reversed(parts[1]))


def test_shard_needs_a_fleet_and_a_valid_index(work: Path) -> None:
    no_fleet = run(work, "--url", "sqlite:///x.db", "check", "--shard", "0/2")
    assert no_fleet.returncode == 2 and "--shard splits a fleet" in no_fleet.stderr
    listing = work / "urls.txt"
    listing.write_text("sqlite:///x.db\n")
    bad = run(work, "check", "--urls-file", str(listing), "--shard", "2/2")
    assert bad.returncode == 2 and "counts from 0" in bad.stderr
    reviewed = run(work, "upgrade", "--urls-file", str(listing), "--plan", "plan.json")
    assert reviewed.returncode == 2 and "--plan applies" in reviewed.stderr


def test_cli_runners_racing_on_one_fleet_apply_each_unit_once(fleet: Fleet, work: Path) -> None:
    """Three `seedguard upgrade --schemas` processes at once, as three pods of an indexed
    Job without --shard: every unit exactly once per schema, every process exits 0."""
    write_module(work, "slow_seeds", seeds_source(["one", "two"], sleep=0.05))
    args = [str(SCRIPT), "--url", fleet.db.url, "--seeds", "slow_seeds", "--lock-timeout",
            "60", "upgrade", "--schemas", pattern(fleet), "--workers", "2", "--json"]
    procs = [subprocess.Popen(args, cwd=work, env=child_env(work), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for _ in range(3)]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert all(code == 0 for code, _, _ in outputs), outputs
    applied = [(t["target"], item["name"]) for _, out, _ in outputs
               for t in json.loads(out)["targets"] for item in t["applied"]]
    assert sorted(applied) == sorted((name, unit) for name in fleet.names
                                     for unit in ("one", "two"))
    for name in fleet.names:
        assert fleet.effects(name) == ["one", "two"]
        assert fleet.ledger(name) == [("one", 1), ("two", 1)]


def test_progress_bar_and_failed_lines_on_a_terminal(work: Path, tmp_path: Path) -> None:
    import sqlalchemy as sa
    from test_cli_process import on_terminal

    urls = []
    for name in ("a", "b", "c"):
        url = f"sqlite:///{tmp_path / name}.db"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            if name != "b":  # b lacks the table: its units fail
                conn.exec_driver_sql(EFFECTS_DDL)
        engine.dispose()
        urls.append(url)
    listing = work / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    code, output = on_terminal([str(SCRIPT), "--seeds", "fleet_seeds", "upgrade",
                                "--urls-file", str(listing), "--workers", "1"], work)
    assert code == 1, output
    assert "targets" in output and "3/3" in output and "1 failed" in output, output
    failed = [line for line in output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {urls[1]}: unit 'roles'"), output
    assert "3 target(s): applied 4 unit(s) to 2 target(s)" in output

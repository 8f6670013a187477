"""References: a data seed of 100,000 users whose role_id names a role (refs=), against the
same rows with literal role ids; both from a CSV file through apply(), into a fresh table."""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from _common import Report, Row, fresh_database, ms, rate

import seedguard
from seedguard.registry import Registry

TARGETS = [
    ("sqlite", "sqlite", None),
    ("postgresql+psycopg", "postgresql", "postgresql+psycopg"),
    ("mariadb", "mariadb", None),
]
REPEAT = 3
ROLES = [f"role-{i}" for i in range(10)]
LIMIT = 1.3

metadata = sa.MetaData()
roles = sa.Table(
    "roles", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
)
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role_id", sa.Integer, sa.ForeignKey("roles.id"), nullable=False),
)


def write_users(path: Path, n: int, role_value: dict[str, object]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name", "role_id"])
        for i in range(n):
            writer.writerow([f"user{i:07d}@example.org", f"User {i}",
                             role_value[ROLES[i % len(ROLES)]]])


def time_seed(engine: sa.Engine, path: Path, *, refs: bool) -> float:
    with engine.begin() as conn:
        users.drop(conn)
        users.create(conn)
        if sa.inspect(conn).has_table("seedguard_ledger"):
            conn.execute(sa.text("DELETE FROM seedguard_ledger"))
    registry = Registry()
    unit = seedguard.data_seed("users", table=users, key="email", path=path,
                               refs={"role_id": ("roles", "name")} if refs else None)
    registry.add(unit)
    started = time.perf_counter()
    result = seedguard.apply(engine, seeds=registry)
    elapsed = time.perf_counter() - started
    assert [u.name for u in result.applied] == ["users"], result
    return elapsed


def run(report: Report, kinds: list[str], n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sg_bench_refs_") as tmp:
        for label, kind, driver in TARGETS:
            if kind not in kinds:
                continue
            with fresh_database(kind, driver) as url:
                engine = sa.create_engine(url)
                try:
                    metadata.create_all(engine)
                    with engine.begin() as conn:
                        conn.execute(roles.insert(), [{"name": r} for r in ROLES])
                        ids = dict(conn.execute(sa.select(roles.c.name, roles.c.id)).all())
                    by_name = Path(tmp) / f"{kind}-by-name.csv"
                    by_id = Path(tmp) / f"{kind}-by-id.csv"
                    write_users(by_name, n, {r: r for r in ROLES})
                    write_users(by_id, n, ids)
                    with_refs, literal = [], []
                    # Alternate the two, best of REPEAT each: a shared machine.
                    for _ in range(REPEAT):
                        literal.append(time_seed(engine, by_id, refs=False))
                        with_refs.append(time_seed(engine, by_name, refs=True))
                    with engine.connect() as conn:
                        wrong = conn.execute(sa.text(
                            "SELECT COUNT(*) FROM users u JOIN roles r ON u.role_id = r.id "
                            "WHERE u.name <> '' AND r.name IS NULL")).scalar()
                        count = conn.execute(sa.text("SELECT COUNT(*) FROM users")).scalar()
                    assert count == n and not wrong, (count, wrong)
                finally:
                    engine.dispose()
            best_refs, best_literal = min(with_refs), min(literal)
            ratio = best_refs / best_literal
            report.add(Row(
                "refs", label, f"data seed of {n:,} users, role_id by role name",
                f"{ms(best_refs)} ({rate(n, best_refs)})",
                f"literal role ids {ms(best_literal)}", ratio, f"<= {LIMIT:g}x",
                ratio <= LIMIT, note=f"best of {REPEAT}, fresh table, CSV through apply()",
            ))

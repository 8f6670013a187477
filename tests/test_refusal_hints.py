"""A unit whose helper writes through a connection of its own (``db.create_all()``) is
refused with the fixes that work: ``transactional=False`` or ``upgrade --schema``;
on each database, with a real Flask-SQLAlchemy app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from _support import TestDatabase
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import seedguard
from seedguard import SeedFailed
from seedguard.flask import SeedGuard


@pytest.fixture
def app(db: TestDatabase) -> Iterator[tuple[Flask, SQLAlchemy]]:
    app = Flask(f"hints_{uuid.uuid4().hex[:6]}")
    app.config["SQLALCHEMY_DATABASE_URI"] = db.url
    fsa = SQLAlchemy(app)
    yield app, fsa
    with app.app_context():
        fsa.engine.dispose()


def test_create_all_in_a_unit_names_transactional_false_and_upgrade_schema(
        db: TestDatabase, app: tuple[Flask, SQLAlchemy]) -> None:
    flask_app, fsa = app

    class Role(fsa.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "roles_hint"
        id = fsa.Column(fsa.Integer, primary_key=True)

    def schema_and_rows() -> None:
        fsa.create_all()  # on a connection of its own, not the unit's
        fsa.session.add(Role(id=1))

    SeedGuard(flask_app, fsa)
    with flask_app.app_context(), pytest.raises(SeedFailed) as info:
        seedguard.apply(seeds=[seedguard.SeedUnit("schema", schema_and_rows)])
    message = str(info.value)
    assert "db.create_all()" in message
    assert "transactional=False" in message
    assert "seedguard upgrade --schema" in message
    assert db.ledger() == []

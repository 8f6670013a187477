from __future__ import annotations

import pytest
from shop.web import create_app, db

from seedguard.pytest_plugin import use_session


@pytest.fixture(scope="session")
def app(seedguard_engine):
    # The app's engine on the tests' database: under xdist on SQLite that is
    # this worker's copy, with --seedguard-clone this worker's clone.
    url = seedguard_engine.url.render_as_string(hide_password=False)
    return create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})


@pytest.fixture
def client(app, seedguard_session):
    # db.session is the test's session while the test runs: the views' commits
    # end a SAVEPOINT, and everything is rolled back after the test.
    with use_session(db, seedguard_session):
        yield app.test_client()

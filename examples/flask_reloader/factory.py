"""The same app as ``app.py`` with an app factory: ``flask --app factory run --debug``.

``flask run --debug`` calls ``create_app()`` in the reloader's parent and again
in each child; ``guard.init_app(app)`` with ``apply_on_start=True`` seeds there,
once all the same, and not when another ``flask`` command creates the app.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

import seedguard
from seedguard.flask import SeedGuard

HERE = Path(__file__).resolve().parent

db = SQLAlchemy()
guard = SeedGuard(apply_on_start=True)


class Admin(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)


@seedguard.seed("tables", transactional=False)  # DDL: see app.py
def tables() -> None:
    db.create_all()


@seedguard.seed("admin-user", after=["tables"])
def admin_user() -> None:
    # Written as Flask code is: db.session and Model.query are the unit's session here.
    email = os.environ.get("ADMIN_EMAIL") or input("admin e-mail? ")
    log = os.environ.get("SEED_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {email}\n")
    db.session.add(Admin(email=email))
    db.session.commit()  # ends a savepoint: the unit commits with its ledger row


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL", f"sqlite:///{HERE / 'app.db'}"
    )
    db.init_app(app)

    @app.get("/")
    def index() -> object:
        emails = db.session.scalars(sa.select(Admin.email).order_by(Admin.id)).all()
        return jsonify(pid=os.getpid(), admins=emails)

    guard.init_app(app)  # last: seeds here when the app is created for a server
    return app

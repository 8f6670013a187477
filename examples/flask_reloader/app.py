"""The app from the problem report: seeding at import time under the Werkzeug reloader.

    python app.py                      # seeds once, asks once, serves on :5000
    touch app.py                       # the reloader restarts the server: nothing re-runs
    SEEDGUARD=off python app.py        # the bug: asks twice, then dies on the unique e-mail

``DATABASE_URL`` picks the database (default: ``app.db`` beside this file),
``PORT`` the port, ``ADMIN_EMAIL`` answers the prompt without asking.
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

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
    "DATABASE_URL", f"sqlite:///{HERE / 'app.db'}"
)
db = SQLAlchemy(app)


class Admin(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)


# create_all() at import races when several processes import the app at once
# (gunicorn workers); as a unit it runs once, under seedguard's locks. DDL commits
# implicitly on MySQL/MariaDB, so it cannot share a transaction: transactional=False.
@seedguard.seed("tables", transactional=False)
def tables() -> None:
    db.create_all()


@seedguard.seed("admin-user", after=["tables"])
def admin_user() -> None:
    # Written as Flask code is: db.session and Model.query are the unit's session here.
    email = os.environ.get("ADMIN_EMAIL") or input("admin e-mail? ")
    _note_run(email)
    db.session.add(Admin(email=email))
    db.session.commit()  # ends a savepoint: the unit commits with its ledger row


def _note_run(email: str) -> None:
    # For the tests (and the curious): one line per time the seed body ran.
    log = os.environ.get("SEED_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {email}\n")


@app.get("/")
def index() -> object:
    emails = db.session.scalars(sa.select(Admin.email).order_by(Admin.id)).all()
    return jsonify(pid=os.getpid(), admins=emails)


SEEDGUARD_ON = os.environ.get("SEEDGUARD", "on") != "off"

# The fix, last in the module so that the units above are declared: when the app
# starts for a server (python app.py, flask run, gunicorn) the first process applies
# both units and every later one (the reloader's child, each restart, each gunicorn
# worker) finds them done; `flask seedguard ...`, `flask shell` and the other flask
# commands leave the database alone.
SeedGuard(app, db, apply_on_start=SEEDGUARD_ON)

if not SEEDGUARD_ON:
    # The bug: this runs in the reloader's parent AND in every child it starts.
    with app.app_context():
        db.create_all()
        admin_user()


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), debug=True,
            use_reloader=True)

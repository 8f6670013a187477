"""The Flask app: Flask-SQLAlchemy over the same models."""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select

from shop import services
from shop.models import Base, Role

db = SQLAlchemy(model_class=Base)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///shop.db"
    app.config.update(config or {})
    db.init_app(app)

    @app.get("/roles")
    def roles() -> list[str]:
        return list(db.session.scalars(select(Role.name).order_by(Role.name)))

    @app.post("/users")
    def add_user() -> tuple[dict[str, Any], int]:
        user = services.register(db.session, request.get_json()["email"])
        return {"id": user.id, "email": user.email, "role": user.role}, 201

    return app

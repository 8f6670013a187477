"""Plain SQLAlchemy code under test: it commits, as real code does."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shop.models import User


def register(session: Session, email: str, role: str = "user") -> User:
    user = User(email=email, role=role)
    session.add(user)
    session.commit()
    return user

from __future__ import annotations

import pytest
from shop.models import Role, User
from shop.services import register
from sqlalchemy import func, select


def test_roles_are_seeded(seedguard_session):
    assert seedguard_session.scalars(select(Role.name).order_by(Role.name)).all() == [
        "admin", "user"]


# Both register the same email and commit: each sees none of the other's rows,
# in whatever order (and on whichever worker) they run.
@pytest.mark.parametrize("role", ["admin", "user"])
def test_register_commits(seedguard_session, role):
    assert seedguard_session.scalar(select(func.count()).select_from(User)) == 0
    user = register(seedguard_session, "ann@example.com", role)
    assert user.id is not None
    assert seedguard_session.scalar(select(User.role)) == role

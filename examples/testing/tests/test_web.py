from __future__ import annotations

import pytest
from shop.models import User
from sqlalchemy import select


def test_roles_page(client):
    assert client.get("/roles").get_json() == ["admin", "user"]


# The view commits through db.session; the test sees the row, the next test does not.
@pytest.mark.parametrize("attempt", [1, 2])
def test_signup(client, seedguard_session, attempt):
    response = client.post("/users", json={"email": "bob@example.com"})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert seedguard_session.scalars(select(User.email)).all() == ["bob@example.com"]

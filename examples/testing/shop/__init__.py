"""A shop with roles and users: plain SQLAlchemy models, a service, a Flask app."""

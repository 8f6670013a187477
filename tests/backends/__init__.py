"""Suites every backend must pass (alembic's ``testing/suite``): a lock or a bulk writer
registered for a dialect inherits its tests; ``test_backend_*.py`` collect them."""

"""A real alembic project in tmp: alembic.ini, env.py and three revisions.

Each revision appends its id to ``schema_log`` (a table with no unique key,
created by the test before alembic runs), so a revision applied twice shows
as two rows. With ``R1_SLEEP`` set in the environment (the concurrency tests
set it to 1 second) r1 sleeps inside its transaction, widening the race
window that concurrent, unlocked ``alembic upgrade head`` runs fall into.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import sqlalchemy as sa

# Imported here, before a child process waits at the barrier, so the children
# start migrating together instead of one import time apart.
from alembic import command
from alembic.config import Config

R1, R2, R3 = "aaaa00000001", "bbbb00000002", "cccc00000003"
REVISIONS = (R1, R2, R3)
SCHEMA_LOG_DDL = "CREATE TABLE schema_log (revision VARCHAR(32) NOT NULL)"

INI = """\
[alembic]
script_location = %(here)s/alembic
sqlalchemy.url = {url}

[loggers]
keys = root

[handlers]
keys =

[formatters]
keys =

[logger_root]
level = WARN
handlers =
"""

# The cookbook env.py: use a connection handed over in config.attributes
# (seedguard does), else build an engine from sqlalchemy.url (plain alembic).
ENV = '''\
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

import seedguard.alembic

config = context.config
# As `alembic init` writes it: this silences every logger that already exists.
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
{models}


def run(connection):
    hook = None if config.attributes.get("no_filter") else seedguard.alembic.include_object
    context.configure(connection=connection, target_metadata=metadata, include_object=hook)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section),
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        run(conn)
'''

# What the three revisions build, for autogenerate to compare against.
MODELS = '''\
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("schema_log", metadata, sa.Column("revision", sa.String(32), nullable=False))
sa.Table("effects", metadata, sa.Column("unit", sa.String(255), nullable=False),
         sa.Column("value", sa.String(255)))  # the tests' side-effect table (_support.py)
sa.Table("widgets", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("name", sa.String(50), nullable=False))
sa.Table("gadgets", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("name", sa.String(50), nullable=False),
         sa.Column("color", sa.String(20), nullable=True))
'''

REVISION = '''\
"""{message}

Revision ID: {rev}
Revises: {down}
"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{body}
    op.execute("INSERT INTO schema_log (revision) VALUES ('{rev}')")


def downgrade():
    pass
'''

BODIES = {
    R1: '''\
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50), nullable=False))
    time.sleep(float(os.environ.get("R1_SLEEP", "0")))''',
    R2: '''\
    op.create_table("gadgets", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50), nullable=False))''',
    R3: '''\
    op.add_column("gadgets", sa.Column("color", sa.String(20), nullable=True))''',
}


def make_project(directory: Path, url: str) -> Path:
    """Write the project under ``directory``; returns the alembic.ini path."""
    scripts = directory / "alembic"
    (scripts / "versions").mkdir(parents=True)
    ini = directory / "alembic.ini"
    ini.write_text(INI.format(url=url.replace("%", "%%")))
    (scripts / "env.py").write_text(ENV.format(models=MODELS))
    (scripts / "script.py.mako").write_text(SCRIPT_MAKO)
    down = None
    for index, rev in enumerate(REVISIONS, start=1):
        source = REVISION.format(message=f"revision {index}", rev=rev, down=down,
                                 body=BODIES[rev])
        (scripts / "versions" / f"{rev}_r{index}.py").write_text(source)
        down = rev
    return ini


def create_schema_log(url: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SCHEMA_LOG_DDL))
    finally:
        engine.dispose()


def schema_log(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.text("SELECT revision FROM schema_log")))
    finally:
        engine.dispose()


def alembic_upgrade(ini: str, target: str = "head") -> None:
    """Plain ``alembic -c ini upgrade target``, as a deploy step without seedguard runs it."""
    command.upgrade(Config(ini), target)


SCRIPT_MAKO = textwrap.dedent('''\
    """${message}

    Revision ID: ${up_revision}
    Revises: ${down_revision | comma,n}
    """
    from alembic import op
    import sqlalchemy as sa
    ${imports if imports else ""}

    revision = ${repr(up_revision)}
    down_revision = ${repr(down_revision)}
    branch_labels = ${repr(branch_labels)}
    depends_on = ${repr(depends_on)}


    def upgrade():
        ${upgrades if upgrades else "pass"}


    def downgrade():
        ${downgrades if downgrades else "pass"}
    ''')

"""Alembic migrations, run programmatically (`neurolabel db upgrade`, or on start)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from daemon.config import ConfigError
from daemon.store.database import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _alembic_config(database: Database) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = database.engine
    return config


# Alembic runs env.py through a module-global context, so two upgrades in one process (daemons started
# side by side in a test) must take turns; across processes env.py's advisory lock serialises them.
_ALEMBIC_IN_PROCESS = threading.Lock()


def upgrade_to_head(database: Database) -> None:
    with _ALEMBIC_IN_PROCESS:
        command.upgrade(_alembic_config(database), "head")


def downgrade_to(database: Database, revision: str) -> None:
    """Undo migrations down to `revision` ("base" for none), for a rollback to an older neurolabel."""
    with _ALEMBIC_IN_PROCESS:
        command.downgrade(_alembic_config(database), revision)


def revisions() -> list[tuple[str, str]]:
    """(revision, message) of every migration, newest first."""
    return [(script.revision, script.doc) for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()]


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


class DatabaseNotMigrated(ConfigError):
    """The database is not at the revision this version needs and auto_migrate is off."""


def ensure_at_head(database: Database) -> None:
    """Raise DatabaseNotMigrated (exit code 2 from the CLI) unless the database is at the head revision."""
    current, head = current_revision(database), head_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"the database is at revision {current or '(empty)'} and this version needs {head}: "
            "run `neurolabel db upgrade` (or set [database] auto_migrate = true)"
        )

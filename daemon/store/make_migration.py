"""Developer tool: `python -m daemon.store.make_migration "message"` writes a migration for schema.py changes."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from daemon.store.database import open_database
from daemon.store.migrate import _alembic_config, upgrade_to_head


def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = open_database(f"sqlite:///{Path(folder) / 'scratch.db'}")
        upgrade_to_head(database)
        command.revision(_alembic_config(database), message=message, autogenerate=True)
        database.dispose()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "schema change")

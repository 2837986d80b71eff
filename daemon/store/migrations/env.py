"""Alembic environment: the engine comes from daemon.store.migrate, never from a URL in a file."""

from __future__ import annotations

from typing import Any

from alembic import context

from daemon.store.schema import UtcDateTime, metadata

# Any constant; instances of neurolabel starting together against one PostgreSQL take this lock so that
# exactly one applies the migrations and the others then find the database at head.
MIGRATION_LOCK_ID = 0x6E6C6D67  # "nlmg"


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write our UtcDateTime as the plain column type it is in the database, so migrations import nothing of ours."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    context.run_migrations()

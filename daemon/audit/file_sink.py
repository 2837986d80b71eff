"""Copies committed audit rows to a rotated JSON-lines file, stripped of patient identifiers.

The table is the record; the file is for SIEMs and log shippers. Rows reach the
file only after they are committed (the sink reads the table), so the file never
tells of something that was rolled back. A small state file remembers the last
row copied, so a restart neither loses nor repeats lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from daemon.store import driver_cache
from daemon.store.database import Database
from daemon.store.schema import audit_events

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.audit")

# Identifier keys that may name a person; never written to the file.
SETTLE_SECONDS = 10.0
PERSONAL_KEYS = frozenset({"patient_id", "patient_name", "issuer_of_patient_id", "birth_date", "text", "report_text"})
# json.dumps(entry, default=str, ensure_ascii=False), without building an encoder for every line (json.dumps
# does when given options); the encoder keeps no state between calls.
_LINE_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)
# The rows after the watermark, oldest first: built once and run as driver statements (daemon/store/driver_cache.py;
# SQLAlchemy's execution and rows were ~4 % of the daemon's GIL time, at seven audit rows a report).
_NEW_ROWS = (
    sa.select(
        *(column for column in audit_events.columns if column.key != "duration_ms"),
        # As the driver gives it (a float on both backends, as SQLAlchemy gives it): psycopg's Float processor
        # needs the column's type code, which only a cursor's description has (tests/audit/test_file_sink.py).
        sa.type_coerce(audit_events.c.duration_ms, sa.types.NullType()).label("duration_ms"),
    )
    .where(audit_events.c.id > sa.bindparam("after"))
    .order_by(audit_events.c.id)
    .limit(sa.bindparam("limit"))
)
_NEW_SETTLED_ROWS = _NEW_ROWS.where(audit_events.c.at <= sa.bindparam("settled"))


def file_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object written for one audit row (pure)."""
    identifiers = {k: v for k, v in (row.get("identifiers") or {}).items() if k not in PERSONAL_KEYS}
    at = row["at"]
    if isinstance(at, dt.datetime):
        at = (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).isoformat(timespec="milliseconds")
    entry = {
        "id": row["id"],
        "at": at,
        "kind": row["kind"],
        "outcome": row["outcome"],
        "actor": row.get("actor"),
        "identifiers": identifiers,
        "duration_ms": row.get("duration_ms"),
        "detail": row.get("detail"),
    }
    return {k: v for k, v in entry.items() if v is not None}


class AuditFile:
    """Appends audit rows after `watermark` to a JSON-lines file rotated by size."""

    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, keep: int = 20) -> None:
        self.path = path
        self._state = path.with_name(path.name + ".position")
        self._max_bytes = max_bytes
        self._keep = keep

    @property
    def watermark(self) -> int:
        try:
            return int(self._state.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def copy_new_rows(self, database: Database, batch: int = 5000) -> int:
        """Copy committed rows not yet in the file; returns how many were written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        query, values = _NEW_ROWS, {"limit": batch}
        if database.dialect == "postgresql":
            # Sequence order is not commit order there: let concurrent transactions settle
            # so that a row with a lower id never commits behind the watermark.
            settled = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=SETTLE_SECONDS)
            query, values = _NEW_SETTLED_ROWS, {**values, "settled": settled}
        while True:
            with database.connect() as connection:
                rows = driver_cache.rows(connection, query, {**values, "after": self.watermark})
            if not rows:
                return written
            self._rotate_if_needed()
            with self.path.open("a", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(_LINE_ENCODER.encode(file_entry(row._asdict())) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._write_watermark(int(rows[-1].id))
            written += len(rows)

    def _write_watermark(self, value: int) -> None:
        temporary = self._state.with_suffix(".tmp")
        temporary.write_text(str(value))
        os.replace(temporary, self._state)

    def _rotate_if_needed(self) -> None:
        try:
            if self.path.stat().st_size < self._max_bytes:
                return
        except FileNotFoundError:
            return
        for index in range(self._keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


class AuditFileComponent:
    """Keeps the audit file up to date: every `interval` seconds and once more when stopping."""

    name = "audit-file"

    def __init__(self, services: Services, interval: float = 2.0) -> None:
        self._database = services.database
        self._file = AuditFile(services.config.audit.log_file)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._last_error: str = ""

    async def start(self) -> None:
        await asyncio.to_thread(self._file.copy_new_rows, self._database)
        self._task = asyncio.create_task(self._run(), name="audit-file")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
            try:
                await asyncio.to_thread(self._file.copy_new_rows, self._database)
                self._last_error = ""
            except Exception as exc:  # the database may be briefly unavailable; retry next round
                self._last_error = type(exc).__name__
                log.warning("audit file not updated: %s", self._last_error)

    async def stop(self, deadline: float) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._file.copy_new_rows, self._database)

    def health(self) -> Health:
        from daemon.app import Health

        return Health(up=not self._last_error, detail=str(self._file.path) if not self._last_error else self._last_error)


def build_audit_file(services: Services) -> AuditFileComponent:
    return AuditFileComponent(services)

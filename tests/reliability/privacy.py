"""The privacy scan: logs and audit files must carry no patient name, patient id or report text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from daemon.store.database import Database
from daemon.store.schema import audit_events


@dataclass(frozen=True)
class Hit:
    where: str
    line: int
    found: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.found!r}"


@dataclass(frozen=True)
class Scanned:
    files: int
    bytes: int
    audit_rows: int
    hits: tuple[Hit, ...]


def scan_text(where: str, text: str, needles: Sequence[str]) -> list[Hit]:
    lowered = [needle.lower() for needle in needles]
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        line_lower = line.lower()
        for needle, low in zip(needles, lowered):
            if low in line_lower:
                hits.append(Hit(where, number, needle))
    return hits


def audit_files(state_dir: Path) -> list[Path]:
    """The audit JSON-lines file and its rotations."""
    folder = state_dir / "audit"
    return sorted(p for p in folder.glob("audit.jsonl*") if p.is_file()) if folder.is_dir() else []


def scan(files: Iterable[Path], needles: Sequence[str], database: Database | None = None) -> Scanned:
    """Scan `files` and (when given) every audit_events row; returns what was scanned and every hit."""
    hits: list[Hit] = []
    count = size = rows = 0
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        count += 1
        size += len(text)
        hits += scan_text(str(path), text, needles)
    if database is not None:
        with database.connect() as connection:
            for row in connection.execute(sa.select(audit_events)).mappings():
                rows += 1
                text = json.dumps({k: row[k] for k in ("kind", "actor", "identifiers", "detail")}, default=str)
                hits += [Hit(f"audit_events#{row['id']}", 1, hit.found) for hit in scan_text("", text, needles)]
    return Scanned(count, size, rows, tuple(hits))

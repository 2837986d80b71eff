"""The "config.load" audit event: which configuration a daemon started with.

The file's path and the sha256 of its bytes show which version of the file was read; the sha256 of the
effective configuration (defaults and overrides included) shows what actually ran, also when no file
was read. Neither holds a value of the configuration, so no path to a secret ends up in the trail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from daemon.audit import trail
from daemon.config import Config
from daemon.store.database import Database

log = logging.getLogger("neurolabel.audit")

AUDIT_KIND = "config.load"


def file_digest(path: Path | None) -> str | None:
    """sha256 of the file's bytes; None without a file or when it cannot be read any more."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def effective_digest(config: Config) -> str:
    """sha256 of the effective configuration, as canonical JSON (the `source` path left out)."""
    values = {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name != "source"}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def record_config_load(database: Database, config: Config, actor: str) -> None:
    """Append the "config.load" event for a daemon starting with `config`."""
    source = config.source.resolve() if config.source is not None else None
    identifiers = {
        "path": str(source) if source else "(embedded defaults)",
        "sha256": file_digest(source),
        "effective_sha256": effective_digest(config),
    }
    with database.begin() as connection:
        trail.record(connection, AUDIT_KIND, trail.SUCCESS, actor=actor, identifiers=identifiers)
    log.info("configuration %s (sha256 %s)", identifiers["path"], (identifiers["sha256"] or "-")[:12])

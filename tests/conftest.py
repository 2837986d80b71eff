"""Shared fixtures: a config rooted in a temporary folder with every port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import Config, parse_config
from daemon.store.database import Database, open_database
from tests.peers.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_test_config(tmp_path: Path, extra_toml: str = "") -> Config:
    """The default config, with state under tmp_path, every listener on port 0 and nothing optional enabled."""
    text = f"""
[daemon]
state_dir = "{tmp_path / 'var'}"
drain_seconds = 5.0
[hl7]
enabled = false
port = 0
[dicom]
enabled = false
port = 0
stable_after_seconds = 0.5
[storage]
path = "{tmp_path / 'var' / 'dicom'}"
min_free_bytes = 0
[database]
url = "sqlite:///{tmp_path / 'var' / 'neurolabel.db'}"
[triton]
enabled = false
model_repository = "{REPO_ROOT / 'triton_models'}"
[metrics]
port = 0
[audit]
report_dir = "{tmp_path / 'var' / 'audit-reports'}"
log_file = "{tmp_path / 'var' / 'audit' / 'audit.jsonl'}"
"""
    return _merge(text, extra_toml)


def _merge(base: str, extra: str) -> Config:
    """Overlay `extra` TOML sections onto `base` (extra's keys win)."""
    import tomllib

    merged = tomllib.loads(base)
    for section, values in tomllib.loads(extra).items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    return parse_config(_dump(merged))


def _dump(data: dict, prefix: str = "") -> str:
    import json

    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for name, table in tables:
        text += f"[{name}]\n" + _dump(table, prefix=f"{name}.")
    return text


@pytest.fixture
def test_config(tmp_path: Path) -> Config:
    return make_test_config(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend: SQLite in tmp_path, and a fresh database on a throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'neurolabel.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database on each backend (the test runs once per backend)."""
    from daemon.store.migrate import upgrade_to_head

    opened = open_database(database_url)
    upgrade_to_head(opened)
    yield opened
    opened.dispose()

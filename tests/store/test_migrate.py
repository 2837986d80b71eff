"""Migrations on SQLite and PostgreSQL: `neurolabel db upgrade`, downgrade for rollback, and [database] auto_migrate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from daemon.app import start_daemon, stop_daemon
from daemon.cli import main
from daemon.config import with_overrides
from daemon.store.database import open_database
from daemon.store.migrate import DatabaseNotMigrated, current_revision, head_revision, revisions, upgrade_to_head
from daemon.store.schema import metadata
from tests.conftest import make_test_config


def _write_config(tmp_path: Path, database_url: str, auto_migrate: bool = True) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\nauto_migrate = {str(auto_migrate).lower()}\n')
    return path


def test_db_upgrade_command_brings_an_empty_database_to_head(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--config", str(_write_config(tmp_path, database_url))]) == 0
    assert f"database at revision {head_revision()}" in capsys.readouterr().out
    database = open_database(database_url)
    try:
        assert current_revision(database) == head_revision()
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == [], "schema.py and the migrations disagree: run python -m daemon.store.make_migration"
        # Idempotent: a second run has nothing to do.
        assert main(["db", "upgrade", "--config", str(_write_config(tmp_path, database_url))]) == 0
    finally:
        database.dispose()


def test_downgrade_for_rollback_and_upgrade_again(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_write_config(tmp_path, database_url))
    assert main(["db", "upgrade", "--config", config]) == 0
    history = [(revision, message) for revision, message in revisions()]
    assert history[0][0] == head_revision() and len(history) >= 2
    capsys.readouterr()
    assert main(["db", "history", "--config", config]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{history[0][0]}  {history[0][1]}  (current)"
    previous = history[1][0]
    assert main(["db", "downgrade", previous, "--config", config]) == 0
    assert f"database at revision {previous}" in capsys.readouterr().out
    assert main(["db", "downgrade", "base", "--config", config]) == 0
    database = open_database(database_url)
    try:
        assert current_revision(database) is None
    finally:
        database.dispose()
    assert main(["db", "downgrade", "no-such-revision", "--config", config]) == 2
    assert main(["db", "upgrade", "--config", config]) == 0


def test_instances_starting_together_migrate_once(database_url: str, tmp_path: Path) -> None:
    config = _write_config(tmp_path, database_url)
    command = [sys.executable, "-m", "daemon.cli", "db", "upgrade", "--config", str(config)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(process.wait(timeout=120), process.stderr.read()) for process in processes]  # type: ignore[union-attr]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    database = open_database(database_url)
    assert current_revision(database) == head_revision()
    database.dispose()


async def test_auto_migrate_on_start(database_url: str, tmp_path: Path) -> None:
    config = with_overrides(make_test_config(tmp_path), database={"url": database_url, "auto_migrate": True})
    daemon = await start_daemon(config)
    try:
        assert current_revision(daemon.services.database) == head_revision()
    finally:
        await stop_daemon(daemon, drain_seconds=5)


async def test_without_auto_migrate_an_old_database_stops_the_start_with_a_clear_error(
    database_url: str, tmp_path: Path
) -> None:
    config = with_overrides(make_test_config(tmp_path), database={"url": database_url, "auto_migrate": False})
    with pytest.raises(DatabaseNotMigrated, match="neurolabel db upgrade"):
        await start_daemon(config)
    database = open_database(database_url)
    try:
        assert current_revision(database) is None  # nothing was changed
        upgrade_to_head(database)
    finally:
        database.dispose()
    daemon = await start_daemon(config)
    await stop_daemon(daemon, drain_seconds=5)


def test_run_without_auto_migrate_exits_2_naming_the_command(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "var"}"\n'
        f'[database]\nurl = "{database_url}"\nauto_migrate = false\n'
        "[hl7]\nenabled = false\n[dicom]\nenabled = false\n[triton]\nenabled = false\n[metrics]\nenabled = false\n"
    )
    assert main(["run", "--config", str(config)]) == 2
    assert "neurolabel db upgrade" in capsys.readouterr().err

"""`neurolabel hl7 rejected` and `neurolabel hl7 reprocess`: kept messages reviewed and run again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.hl7.intake import Received
from daemon.hl7.review import intake_for
from daemon.store.database import open_database
from daemon.store.migrate import upgrade_to_head
from tests.hl7.messages import oru


def _config_file(tmp_path: Path, allowed_senders: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n[database]\nurl = "sqlite:///{tmp_path / "n.db"}"\n'
        f"[hl7]\nallowed_senders = {allowed_senders}\n"
    )
    return path


def test_list_and_reprocess_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.config import load_config

    strict = _config_file(tmp_path, '["PACS"]')
    database = open_database(load_config(strict).database.url)
    upgrade_to_head(database)
    now = dt.datetime.now(dt.timezone.utc)
    intake_for(load_config(strict), database).handle_batch(
        [Received(oru("REV1").encode(), "10.1.1.1:5000", now), Received(b"junk", "10.1.1.1:5000", now)]
    )
    database.dispose()

    assert main(["hl7", "rejected", "--json", "--config", str(strict)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["control_id"], r["error_code"]) for r in rows] == [("", "100"), ("REV1", "103")]
    assert "MRN12345" not in json.dumps(rows)

    relaxed = _config_file(tmp_path, "[]")
    assert main(["hl7", "reprocess", "--all", "--config", str(relaxed)]) == 1  # the junk is rejected again
    lines = capsys.readouterr().out.splitlines()
    assert "accepted" in lines[0] and "rejected" in lines[1]

    assert main(["hl7", "rejected", "--config", str(relaxed)]) == 0
    listed = capsys.readouterr().out
    assert "REV1" not in listed  # reprocessed, no longer waiting for review
    assert main(["hl7", "reprocess", "--config", str(relaxed)]) == 2

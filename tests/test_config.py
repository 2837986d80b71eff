"""Configuration validation from a table of good and bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import Config, ConfigError, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_toml_equals_the_embedded_defaults() -> None:
    shipped = load_config(REPO_ROOT / "config.toml")
    assert shipped == Config(source=REPO_ROOT / "config.toml")


def test_every_default_key_is_documented_in_config_toml() -> None:
    import dataclasses
    import tomllib

    shipped = tomllib.loads((REPO_ROOT / "config.toml").read_text())

    def keys(obj: object, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for item in dataclasses.fields(obj):  # type: ignore[arg-type]
            if item.name == "source":
                continue
            value = getattr(obj, item.name)
            found |= keys(value, f"{prefix}{item.name}.") if dataclasses.is_dataclass(value) else {prefix + item.name}
        return found

    def toml_keys(table: dict, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for key, value in table.items():
            found |= toml_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
        return found

    assert keys(Config()) == toml_keys(shipped)


GOOD = [
    ("", lambda c: c.hl7.port == 2575),
    ("[hl7]\nport = 0\n", lambda c: c.hl7.port == 0),
    ('[writeback]\nforward_to = ["PACS@127.0.0.1:4242"]\n', lambda c: c.writeback.forward_to == ("PACS@127.0.0.1:4242",)),
    ('[triton]\nurl = "triton.example:8001"\n', lambda c: c.triton.url == "triton.example:8001"),
    ('[database]\nurl = "postgresql+psycopg://nl@db/neurolabel"\n', lambda c: c.database.url.startswith("postgresql")),
    ("[dicom.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n", lambda c: c.dicom.tls.enabled),
    ("[workers]\nretry_base_seconds = 1\n", lambda c: c.workers.retry_base_seconds == 1.0),
]


@pytest.mark.parametrize(("text", "check"), GOOD)
def test_good_files(text: str, check) -> None:  # type: ignore[no-untyped-def]
    assert check(parse_config(text))


BAD = [
    ("[hl7]\nprot = 2575\n", "unknown key 'hl7.prot' (did you mean hl7.port?)", 2),
    ('[daemon]\nevent_loop = "trio"\n', "'daemon.event_loop' must be one of auto, uvloop, asyncio", 2),
    ("[nosuch]\nx = 1\n", "unknown key 'nosuch'", 1),
    ("[hl7]\nport = \"2575\"\n", "'hl7.port' must be an integer", 2),
    ("[hl7]\nport = 70000\n", "'hl7.port' must be a TCP port", 2),
    ("[hl7]\nenabled = 1\n", "'hl7.enabled' must be true or false", 2),
    ("[dicom]\nduplicate_policy = \"overwrite\"\n", "'dicom.duplicate_policy' must be one of", 2),
    ("[dicom]\nae_title = \"THIS_TITLE_IS_TOO_LONG\"\n", "not a valid AE title", 2),
    ('[writeback]\nforward_to = ["PACS:4242"]\n', "not of the form AE@host:port", None),
    ('[hl7]\nallowed_networks = ["10.0.0.0/33"]\n', "not an address or CIDR network", 2),
    ('[database]\nurl = "mysql://x"\n', "database.url must start with", None),
    ('[triton]\ncpu_priority = "high"\n', "triton.cpu_priority must be one of normal, low, idle", None),
    ("[hl7.tls]\ncert = \"c.pem\"\n", "hl7.tls.key is required", None),
    ("[hl7\n", "invalid TOML", None),
    ("hl7 = 3\n", "'hl7' must be a table", 1),
]


@pytest.mark.parametrize(("text", "message", "line"), BAD)
def test_bad_files_name_the_key_and_line(text: str, message: str, line: int | None, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    if line is not None:
        assert f"{path}:{line}:" in str(caught.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "absent.toml")


def test_environment_variable_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[hl7]\nport = 3000\n")
    monkeypatch.setenv("NEUROLABEL_CONFIG", str(path))
    assert load_config().hl7.port == 3000


def test_config_is_immutable() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().hl7.port = 1  # type: ignore[misc]


def test_cli_mistyped_key_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[dicom]\nae_tilte = \"X\"\n")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(path), "status"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "dicom.ae_tilte" in result.stderr and "did you mean dicom.ae_title" in result.stderr
    assert "Traceback" not in result.stderr

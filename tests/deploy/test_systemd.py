"""deploy/systemd: the unit's keys, and deploy/install-systemd.sh run into a throwaway root (DESTDIR),
then checked there by `systemd-analyze verify` and `systemd-analyze security --offline`.
"""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import EXIT_USAGE
from daemon.config import load_config
from tests.conftest import REPO_ROOT

SYSTEMD = REPO_ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "neurolabel.service"
INSTALL = REPO_ROOT / "deploy" / "install-systemd.sh"
PREFIX = "/opt/neurolabel"
MAX_EXPOSURE = 2.5  # systemd-analyze security: 0 (locked down) .. 10 (exposed); the unit scores about 1.9


def _unit() -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values, in order]}}; systemd allows repeated keys."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def _one(values: dict[str, list[str]], key: str) -> str:
    [value] = values[key]
    return value


def test_unit_runs_confined_as_its_own_user() -> None:
    service = _unit()["Service"]
    assert _one(service, "User") == _one(service, "Group") == "neurolabel"
    assert _one(service, "ExecStart") == f"{PREFIX}/venv/bin/neurolabel run"
    assert _one(service, "Environment") == "NEUROLABEL_CONFIG=/etc/neurolabel/config.toml"
    assert _one(service, "EnvironmentFile") == "-/etc/neurolabel/neurolabel.env"
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
    }.items():
        assert _one(service, key) == value, key
    assert int(_one(service, "LimitNOFILE")) >= 65536
    assert _one(service, "RestartPreventExitStatus") == str(EXIT_USAGE)
    assert _unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_lets_the_daemon_write_where_its_config_points_and_drain_before_the_kill() -> None:
    service = _unit()["Service"]
    writable = [Path(p) for p in _one(service, "ReadWritePaths").split()]
    assert Path("/var/lib") / _one(service, "StateDirectory") in writable
    assert Path("/var/log") / _one(service, "LogsDirectory") in writable
    config = load_config(SYSTEMD / "config.toml")
    database = Path(config.database.url.removeprefix("sqlite:///"))
    audit = config.audit
    for path in (config.daemon.state_dir, config.storage.path, database, audit.report_dir, audit.log_file):
        assert any(path.is_relative_to(root) for root in writable), f"{path} is read-only under ProtectSystem=strict"
    assert str(config.triton.model_repository) == f"{PREFIX}/triton_models"
    assert _one(service, "WorkingDirectory") == str(config.daemon.state_dir)
    # SIGTERM drains for drain_seconds, then the bundled Triton gets up to 10 s (--exit-timeout-secs).
    timeout_stop = float(_one(service, "TimeoutStopSec"))
    assert timeout_stop >= config.daemon.drain_seconds + 15


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/install-systemd.sh run into a throwaway root, from a wheel of this checkout (no network)."""
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed (Debian package systemd)")
    folder = tmp_path_factory.mktemp("install")
    wheels = folder / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("neurolabel-*.whl")
    root = folder / "root"
    # The script reuses an existing virtual environment (that is how it upgrades). Made here, it sees this
    # test environment's packages through a .pth line, so the install needs no network for dependencies.
    venv = root / PREFIX.lstrip("/") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site_packages] = venv.glob("lib/python3*/site-packages")
    dependencies = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "sqlalchemy").exists())
    (site_packages / "test-dependencies.pth").write_text(f"{dependencies}\n")
    _install(root, wheel)
    return root


def _install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DESTDIR": str(root),
        "PYTHON": sys.executable,
        "PACKAGE": str(wheel),
        # Only the package itself: its dependencies are this test environment's business, not the install's.
        "PIP_OPTIONS": "--no-deps --no-index",
    }
    result = subprocess.run(["bash", str(INSTALL)], env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_install_lays_out_the_service(installed: Path) -> None:
    root = installed
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    user = passwd["neurolabel"]
    assert user[5] == "/var/lib/neurolabel" and user[6] == "/usr/sbin/nologin"
    assert 0 < int(user[2]) < 1000, "a system user"
    assert (root / "etc/systemd/system/neurolabel.service").read_text() == UNIT.read_text()
    config = root / "etc/neurolabel/config.toml"
    assert config.read_text() == (SYSTEMD / "config.toml").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    if os.geteuid() == 0:
        lines = (root / "etc/group").read_text().splitlines()
        group = [line.split(":") for line in lines if line.startswith("neurolabel:")]
        assert config.stat().st_gid == int(group[0][2])
    assert stat.S_IMODE((root / "etc/neurolabel/neurolabel.env").stat().st_mode) == 0o640
    assert (root / PREFIX.lstrip("/") / "triton_models/neurolabel_report/config.pbtxt").exists()
    assert not list((root / PREFIX.lstrip("/") / "triton_models").rglob("__pycache__"))
    assert (root / PREFIX.lstrip("/") / "config.toml.example").read_text() == (REPO_ROOT / "config.toml").read_text()
    assert (root / PREFIX.lstrip("/") / "docs/deploy.md").exists()
    command = root / PREFIX.lstrip("/") / "venv/bin/neurolabel"
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "db" in result.stdout


@pytest.mark.slow
def test_reinstall_keeps_the_sites_configuration(installed: Path) -> None:
    config = installed / "etc/neurolabel/config.toml"
    edited = config.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1)
    config.write_text(edited)
    [wheel] = (installed.parent / "wheels").glob("neurolabel-*.whl")
    result = _install(installed, wheel)
    assert "kept existing /etc/neurolabel/config.toml" in result.stdout
    assert config.read_text() == edited
    assert (installed / PREFIX.lstrip("/") / "config.toml.dist").read_text() == (SYSTEMD / "config.toml").read_text()


@pytest.mark.slow
def test_systemd_accepts_the_installed_unit(installed: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify --root needs the targets the unit refers to (multi-user.target, network-online.target ...).
    units = Path("/usr/lib/systemd/system")
    target = installed / "usr/lib/systemd/system"
    if not target.exists():
        shutil.copytree(units, target, symlinks=True)
    verify = subprocess.run(
        [analyze, "verify", f"--root={installed}", "neurolabel.service"], capture_output=True, text=True
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={installed}", "neurolabel.service"],
        capture_output=True, text=True,
    )
    line = next(line for line in security.stdout.splitlines() if "Overall exposure level" in line)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= MAX_EXPOSURE, line


def test_install_script_refuses_a_real_install_without_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    else:
        run_as = {}
    result = subprocess.run(
        ["bash", str(INSTALL)], env={"PATH": os.environ["PATH"], "DESTDIR": ""}, capture_output=True, text=True,
        cwd="/", **run_as,
    )
    assert result.returncode == 1 and "run as root" in result.stderr

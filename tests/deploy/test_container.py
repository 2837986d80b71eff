"""deploy/container: the daemon's Dockerfile read as data, and its entry point run for real.

The entry point turns the Compose secret into a libpq password file; the test proves that file logs in
to a PostgreSQL that demands the password (scram-sha-256), with the awkward characters escaped.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from daemon.config import load_config
from tests.conftest import REPO_ROOT
from tests.peers.postgres import find_bin_dir, running_cluster

CONTAINER = REPO_ROOT / "deploy" / "container"
ENTRYPOINT = CONTAINER / "entrypoint.sh"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def test_daemon_image() -> None:
    instructions = _instructions(CONTAINER / "Dockerfile")
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in instructions
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                if not source.startswith("--"):
                    assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "the daemon must not run as root"
    assert ("ENTRYPOINT", '["neurolabel-entrypoint"]') in instructions
    assert ("CMD", '["run"]') in instructions
    assert any(keyword == "HEALTHCHECK" for keyword, _ in instructions)
    install = next(args for keyword, args in instructions if keyword == "RUN" and "pip install" in args)
    assert "[postgres]" in install, "the image talks to PostgreSQL: psycopg must be in it"
    environment = next(args for keyword, args in instructions if keyword == "ENV")
    assert "NEUROLABEL_CONFIG=/etc/neurolabel/config.toml" in environment.split()
    config = load_config(CONTAINER / "config.toml")
    assert str(config.daemon.state_dir) == "/var/lib/neurolabel"
    assert ("VOLUME", '["/var/lib/neurolabel"]') in instructions


def test_triton_image_installs_what_the_model_imports() -> None:
    instructions = _instructions(CONTAINER / "triton.Dockerfile")
    install = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "numpy==1.26.4" in install and "tokenizers==" in install and "onnxruntime-gpu==" in install
    pinned = (REPO_ROOT / "pyproject.toml").read_text()
    for requirement in ("numpy==1.26.4", "tokenizers==0.23.3"):
        assert f'"{requirement}"' in pinned and requirement in install, requirement


def _entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the entry point with a stand-in `neurolabel` that prints its arguments and PGPASSFILE."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "neurolabel"
    fake.write_text('#!/bin/sh\necho "args: $*"\necho "passfile: ${PGPASSFILE:-}"\n')
    fake.chmod(0o755)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), **env}
    return subprocess.run(["sh", str(ENTRYPOINT), "run", "--x"], env=environment, capture_output=True, text=True)


def test_entrypoint_without_secret_runs_neurolabel_unchanged(tmp_path: Path) -> None:
    result = _entrypoint(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["args: run --x", "passfile: "]


def test_entrypoint_with_an_unreadable_secret_exits_2(tmp_path: Path) -> None:
    result = _entrypoint(tmp_path, {"NEUROLABEL_DB_PASSWORD_FILE": str(tmp_path / "missing")})
    assert result.returncode == 2 and "cannot read" in result.stderr


@pytest.mark.postgres
def test_entrypoint_password_file_logs_in_to_postgresql(tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package 'postgresql')")
    password = r"s3cr:et\with:colons"
    secret = tmp_path / "postgres_password"
    secret.write_text(password + "\n")
    result = _entrypoint(tmp_path, {"NEUROLABEL_DB_PASSWORD_FILE": str(secret)})
    assert result.returncode == 0, result.stderr
    passfile = Path(result.stdout.splitlines()[1].removeprefix("passfile: "))
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600  # libpq ignores a file others can read
    with running_cluster(bin_dir, password=password) as server:
        conninfo = f"host={server.host} port={server.port} user={server.user} dbname=postgres"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(conninfo, passfile=os.devnull, connect_timeout=10).close()
        with psycopg.connect(conninfo, passfile=str(passfile), connect_timeout=10) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)

"""deploy/compose.yaml, read as data: the services, their mounts and ports, and the daemon's config agree.

No Docker engine runs here; where the `docker compose` plugin exists, `docker compose config` checks the
file as Compose itself reads it (it needs no engine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from daemon.config import Config, load_config, parse_ae_address
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
TRITON_GRPC_PORT = 8001


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _service_config(compose: dict[str, Any], service: str) -> Config:
    """The config.toml the service mounts at /etc/neurolabel/config.toml, parsed and validated."""
    for volume in compose["services"][service]["volumes"]:
        source, target, *_ = volume.split(":")
        if target == "/etc/neurolabel/config.toml":
            return load_config(DEPLOY / source)
    raise AssertionError(f"{service} mounts no /etc/neurolabel/config.toml")


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """{target: source} of a service's volumes (short syntax)."""
    return {volume.split(":")[1]: volume.split(":")[0] for volume in service.get("volumes", [])}


def _published(service: dict[str, Any]) -> dict[int, str]:
    """{container port: host address ('' for every interface)} of a service's published ports."""
    result: dict[int, str] = {}
    for port in service.get("ports", []):
        parts = str(port).split(":")
        result[int(parts[-1])] = parts[0] if len(parts) == 3 else ""
    return result


def test_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "triton", "orthanc", "neurolabel", "neurolabel-worker"}
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
        assert service.get("networks") == ["backend"], name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
    assert set(compose["volumes"]) == {"postgres-data", "orthanc-data", "neurolabel-state", "neurolabel-dicom"}


def test_triton_serves_the_repository_on_the_gpu(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]
    dockerfile = REPO_ROOT / triton["build"]["dockerfile"]
    assert (DEPLOY / triton["build"]["context"]).resolve() == REPO_ROOT
    assert "FROM ${TRITON_IMAGE}" in dockerfile.read_text()
    assert "ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:" in dockerfile.read_text()
    mounts = _mounts(triton)
    assert (DEPLOY / mounts["/models"]).resolve() == REPO_ROOT / "triton_models"
    assert "/models:ro" in " ".join(triton["volumes"])
    command = triton["command"]
    assert command[0] == "tritonserver" and "--model-repository=/models" in command
    config_name = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--model-config-name="))
    model = load_config(DEPLOY / "container" / "config.toml").triton.model
    gpu_config = REPO_ROOT / "triton_models" / model / "configs" / f"{config_name}.pbtxt"
    assert gpu_config.exists(), f"{gpu_config} is what --model-config-name={config_name} loads"
    assert "KIND_GPU" in gpu_config.read_text()
    [device] = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "shm_size" in triton
    assert _published(triton) == {8002: "127.0.0.1"}  # metrics only, loopback only


def test_daemon_config_points_at_the_other_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = _service_config(compose, "neurolabel")
    url = make_url(config.database.url)
    postgres = services["postgres"]["environment"]
    assert url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"
    assert (url.host, url.port, url.username, url.database) == (
        "postgres", 5432, postgres["POSTGRES_USER"], postgres["POSTGRES_DB"],
    )
    assert url.password is None, "the password comes from the secret, never the config"
    assert config.triton.url == f"triton:{TRITON_GRPC_PORT}"
    orthanc = json.loads((DEPLOY / _mounts(services["orthanc"])["/etc/orthanc/orthanc.json"]).read_text())
    [destination] = [parse_ae_address("writeback.forward_to", d) for d in config.writeback.forward_to]
    assert (destination.ae_title, destination.host, destination.port) == ("ORTHANC", "orthanc", orthanc["DicomPort"])
    assert orthanc["DicomAet"] == destination.ae_title
    allowed = {m["AET"] for m in orthanc["DicomModalities"].values() if m.get("AllowStore")}
    assert config.writeback.calling_ae_title in allowed, "Orthanc must accept the daemon's C-STOREs"


def test_daemon_listens_where_compose_publishes(compose: dict[str, Any]) -> None:
    service = compose["services"]["neurolabel"]
    config = _service_config(compose, "neurolabel")
    assert config.hl7.enabled and config.dicom.enabled and config.metrics.enabled
    assert {config.hl7.host, config.dicom.host, config.metrics.host} == {"0.0.0.0"}
    published = _published(service)
    assert published == {config.hl7.port: "", config.dicom.port: "", config.metrics.port: "127.0.0.1"}
    dockerfile = (DEPLOY / "container" / "Dockerfile").read_text()
    assert f"EXPOSE {config.hl7.port} {config.dicom.port} {config.metrics.port}" in dockerfile
    assert f":{config.metrics.port}/healthz" in dockerfile


def test_state_and_storage_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    daemon, worker = _service_config(compose, "neurolabel"), _service_config(compose, "neurolabel-worker")
    assert _mounts(services["neurolabel"])[str(daemon.daemon.state_dir)] == "neurolabel-state"
    # Received studies are shared by every instance, since any of them may write labels back.
    for name, config in (("neurolabel", daemon), ("neurolabel-worker", worker)):
        assert _mounts(services[name])[str(config.storage.path)] == "neurolabel-dicom", name
    assert worker.daemon.state_dir != daemon.daemon.state_dir


def test_worker_instances_share_the_queue_without_listeners(compose: dict[str, Any]) -> None:
    worker_service = compose["services"]["neurolabel-worker"]
    assert worker_service["profiles"] == ["scale"]
    assert worker_service["image"] == compose["services"]["neurolabel"]["image"]
    assert "ports" not in worker_service
    assert worker_service["depends_on"]["neurolabel"]["condition"] == "service_healthy"
    daemon, worker = _service_config(compose, "neurolabel"), _service_config(compose, "neurolabel-worker")
    assert not worker.hl7.enabled and not worker.dicom.enabled
    for section in ("database", "triton", "writeback", "workers", "linking"):
        assert getattr(worker, section) == getattr(daemon, section), section
    assert worker.daemon.instance_name == daemon.daemon.instance_name == "", "each instance names itself"


def test_stop_grace_covers_the_drain(compose: dict[str, Any]) -> None:
    for name in ("neurolabel", "neurolabel-worker"):
        grace = int(compose["services"][name]["stop_grace_period"].rstrip("s"))
        assert grace >= _service_config(compose, name).daemon.drain_seconds + 10, name


def test_no_secret_is_committed(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    secret_file = compose["secrets"]["postgres_password"]["file"]
    for name in ("neurolabel", "neurolabel-worker"):
        service = compose["services"][name]
        assert service["secrets"] == ["postgres_password"]
        assert service["environment"]["NEUROLABEL_DB_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for env_file in compose["services"]["orthanc"]["env_file"]:
        assert (DEPLOY / f"{env_file}.example").exists()
        _assert_ignored(DEPLOY / env_file)
    _assert_ignored(DEPLOY / secret_file)


def _assert_ignored(path: Path) -> None:
    result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO_ROOT)
    assert result.returncode == 0, f"{path.relative_to(REPO_ROOT)} must be in .gitignore"


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed (the YAML is checked by the other tests)")
    # The secret and env file an operator creates, in a copy of deploy/ so the checkout stays clean.
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    (copy / "secrets").mkdir(exist_ok=True)
    (copy / "secrets" / "postgres_password").write_text("not-a-real-password\n")
    shutil.copy(copy / "orthanc.env.example", copy / "orthanc.env")
    (tmp_path / "triton_models").mkdir()
    result = subprocess.run(
        [docker, "compose", "--file", str(copy / "compose.yaml"), "--profile", "scale", "config", "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr

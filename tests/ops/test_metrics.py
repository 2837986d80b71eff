"""The per-stage metrics: one definition per daemon, exposed in both Prometheus formats without name clashes.

(That traffic moves them is checked with the whole daemon in tests/audit/test_story.py.)
"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from daemon.app import start_daemon, stop_daemon
from daemon.config import Config
from daemon.ops.metrics import StageMetrics

STAGE_FAMILIES = {
    "neurolabel_hl7_messages", "neurolabel_hl7_ack_seconds", "neurolabel_hl7_connections",
    "neurolabel_dicom_associations", "neurolabel_dicom_instances", "neurolabel_dicom_received_bytes",
    "neurolabel_dicom_store_seconds", "neurolabel_jobs_finished", "neurolabel_job_seconds",
    "neurolabel_classify_batch_size", "neurolabel_triton_seconds", "neurolabel_triton_ready",
    "neurolabel_triton_unavailable", "neurolabel_reports_classified", "neurolabel_writebacks", "neurolabel_forwards",
    "neurolabel_retention_removed",
}


def fetch(port: int, accept: str | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


async def test_every_stage_metric_is_exposed_once_in_both_formats(test_config: Config) -> None:
    daemon = await start_daemon(test_config)
    try:
        port = daemon.component("http").port  # type: ignore[attr-defined]
        classic = fetch(port)
        openmetrics = fetch(port, "application/openmetrics-text; version=1.0.0")
    finally:
        await stop_daemon(daemon, drain_seconds=5)
    names = [family.name for family in text_string_to_metric_families(classic)]
    assert len(names) == len(set(names))
    assert STAGE_FAMILIES <= set(names)
    assert {"neurolabel_component_up", "neurolabel_jobs"} <= set(names)  # read at scrape time (daemon/ops/http.py)
    strict = [family.name for family in openmetrics_families(openmetrics)]  # raises on a clash of family names
    assert STAGE_FAMILIES <= set(strict)


def test_a_registry_gets_the_metrics_once() -> None:
    registry = CollectorRegistry()
    StageMetrics.create(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        StageMetrics.create(registry)


def test_outcome_counts_success_and_failure() -> None:
    registry = CollectorRegistry()
    metrics = StageMetrics.create(registry)
    with metrics.outcome(metrics.forwards, destination="PACS@h:104"):
        pass
    with pytest.raises(OSError), metrics.outcome(metrics.forwards, destination="PACS@h:104"):
        raise OSError("refused")
    for outcome in ("success", "failure"):
        labels = {"destination": "PACS@h:104", "outcome": outcome}
        assert registry.get_sample_value("neurolabel_forwards_total", labels) == 1

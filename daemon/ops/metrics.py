"""Every per-stage Prometheus metric of the daemon, defined once per daemon on its registry.

`StageMetrics.create(registry)` runs once when the daemon's Services are built; components observe through
`services.metrics`, so a component built twice (a restart in a test) never registers a name twice.
Component states and queue depths are read at scrape time by daemon/ops/http.py; they are not here.

Names follow Prometheus conventions: counters end in `_total` when exposed, times are in seconds.
Labels have a small, fixed set of values (outcomes, job kinds, destinations from the configuration);
never an id, so a busy daemon does not grow a series per message or study.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets, in seconds.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JOB_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

SUCCESS = "success"
FAILURE = "failure"


@dataclass(frozen=True)
class StageMetrics:
    # HL7 intake
    hl7_messages: Counter  # outcome: accepted | duplicate | rejected | failed | discarded
    hl7_ack_seconds: Histogram
    hl7_connections: Gauge
    # DICOM intake
    dicom_associations: Counter  # outcome: accepted | rejected
    dicom_instances: Counter  # outcome: stored | replaced | duplicate_kept | duplicate_refused | failed | <refusal>
    dicom_bytes: Counter  # outcome, as dicom_instances (bytes of the instances stored)
    dicom_store_seconds: Histogram
    # work queue
    jobs_finished: Counter  # kind, outcome: done | deferred | retry | failed
    job_seconds: Histogram  # kind
    # inference
    classify_batch_size: Histogram
    triton_seconds: Histogram
    triton_ready: Gauge
    triton_unavailable: Counter
    reports_classified: Counter
    # write-back
    writebacks: Counter  # outcome: success | failure
    forwards: Counter  # destination, outcome: success | failure
    # retention
    retention_removed: Counter  # what: hl7_raw | hl7_rejected | files | audit_rows

    @classmethod
    def create(cls, registry: CollectorRegistry) -> StageMetrics:
        def counter(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, help_text, labels, registry=registry)

        def histogram(name: str, help_text: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, help_text, labels, registry=registry, buckets=buckets)

        return cls(
            hl7_messages=counter("neurolabel_hl7_messages", "HL7 messages received, by outcome", ("outcome",)),
            hl7_ack_seconds=histogram(
                "neurolabel_hl7_ack_seconds", "Time from a message's last byte to its acknowledgement being written",
                FAST_BUCKETS,
            ),
            hl7_connections=Gauge("neurolabel_hl7_connections", "Open MLLP connections", registry=registry),
            dicom_associations=counter(
                "neurolabel_dicom_associations", "DICOM associations by outcome", ("outcome",)
            ),
            dicom_instances=counter("neurolabel_dicom_instances", "C-STORE requests by outcome", ("outcome",)),
            dicom_bytes=counter(
                "neurolabel_dicom_received_bytes", "Bytes of instances stored, by outcome", ("outcome",)
            ),
            dicom_store_seconds=histogram(
                "neurolabel_dicom_store_seconds", "C-STORE handling time up to the commit", FAST_BUCKETS
            ),
            jobs_finished=counter(
                "neurolabel_jobs_finished", "Jobs run by the workers, by kind and outcome", ("kind", "outcome")
            ),
            job_seconds=histogram(
                "neurolabel_job_seconds", "Time to run one job (or one batch), by kind", JOB_BUCKETS, ("kind",)
            ),
            classify_batch_size=histogram(
                "neurolabel_classify_batch_size", "Reports sent to the classifier in one call", BATCH_SIZE_BUCKETS
            ),
            triton_seconds=histogram(
                "neurolabel_triton_seconds", "Time for Triton to classify one batch of reports", INFERENCE_BUCKETS
            ),
            triton_ready=Gauge(
                "neurolabel_triton_ready",
                "1 when Triton last answered (a batch or a health probe), 0 when it could not",
                registry=registry,
            ),
            triton_unavailable=counter(
                "neurolabel_triton_unavailable", "Batches deferred because Triton could not answer"
            ),
            reports_classified=counter("neurolabel_reports_classified", "Reports given a prediction"),
            writebacks=counter(
                "neurolabel_writebacks", "Write-backs of labels into DICOM (tags, SR), by outcome", ("outcome",)
            ),
            forwards=counter(
                "neurolabel_forwards", "Forwards of labelled studies, by destination and outcome",
                ("destination", "outcome"),
            ),
            retention_removed=counter(
                "neurolabel_retention_removed", "Items removed by the retention jobs, by what", ("what",)
            ),
        )

    @staticmethod
    @contextlib.contextmanager
    def outcome(counter: Counter, **labels: str) -> Iterator[None]:
        """Count the block as outcome="success", or "failure" when it raises (the exception propagates)."""
        try:
            yield
        except Exception:
            counter.labels(**labels, outcome=FAILURE).inc()
            raise
        counter.labels(**labels, outcome=SUCCESS).inc()

"""Soak: `neurolabel run` as a process under steady load from 8 C-STORE associations and 4 HL7 senders
(about a minute in CI, 10 minutes with NEUROLABEL_LONG=1).

Nothing acknowledged is lost (the same checks as the crash test); the daemon's resident memory is sampled
every few seconds and its growth reported; acknowledgement latency (HL7 ACK, C-STORE response) is
reported per minute as p50/p95, with the time from the last of report and study to labels written.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from daemon.store.schema import jobs, reports, studies, study_labels
from tests.reliability.conftest import LONG, DaemonFactory, Figures, scaled
from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.load import Cases, Load
from tests.reliability.triton_service import TritonService
from tests.reliability.verify import finish

pytestmark = [pytest.mark.triton, pytest.mark.slow]

DURATION_SECONDS = scaled(60.0, 600.0)
CASES_PER_SECOND = 1.0
SAMPLE_SECONDS = 5.0
WARM_UP_SECONDS = 20.0


class Sampler(threading.Thread):
    """Resident memory and queue backlog of the daemon, every SAMPLE_SECONDS."""

    def __init__(self, daemon: DaemonProcess) -> None:
        super().__init__(name="sampler", daemon=True)
        self.daemon = daemon
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, RSS bytes, active jobs)
        self.stopped = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            with self.daemon.reading() as connection:
                active = connection.execute(
                    sa.select(sa.func.count()).select_from(jobs).where(jobs.c.state.in_(("pending", "running")))
                ).scalar()
            self.samples.append((time.monotonic() - self.started_at, self.daemon.rss_bytes(), int(active or 0)))

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def per_minute(latencies: list[tuple[float, str, float]], start: float,
               samples: Sequence[tuple[float, int, int]] = ()) -> list[dict[str, object]]:
    minutes: list[dict[str, object]] = []
    for minute in range(int((max((t for t, _, _ in latencies), default=start) - start) // 60) + 1):
        row: dict[str, object] = {"minute": minute + 1}
        for kind in ("hl7", "dicom"):
            values = [s for t, k, s in latencies if k == kind and minute * 60 <= t - start < (minute + 1) * 60]
            row[kind] = {"count": len(values), "p50_ms": round(percentile(values, 0.5) * 1000, 1),
                         "p95_ms": round(percentile(values, 0.95) * 1000, 1)}
        resident = [rss for at, rss, _ in samples if minute * 60 <= at < (minute + 1) * 60]
        row["rss_mb"] = round(statistics.mean(resident) / 2**20, 1) if resident else None
        minutes.append(row)
    return minutes


def labelling_delays(daemon: DaemonProcess) -> list[float]:
    """Seconds from the later of report stored and study last received to labels written, per study."""
    with daemon.reading() as connection:
        rows = connection.execute(
            sa.select(study_labels.c.labelled_at, reports.c.created_at, studies.c.last_received_at)
            .join(reports, reports.c.id == study_labels.c.report_id)
            .join(studies, studies.c.study_instance_uid == study_labels.c.study_instance_uid)
        ).all()
    return [(row.labelled_at - max(row.created_at, row.last_received_at)).total_seconds() for row in rows]


def test_soak_loses_nothing_with_flat_memory_and_stable_latency(
    daemon_factory: DaemonFactory, triton: TritonService, figures: Figures
) -> None:
    daemon = daemon_factory("soak", triton_url=triton.grpc_url)
    daemon.start()
    cases = Cases("SOAK", instances=3, seed=11)
    sampler = Sampler(daemon)
    sampler.start()
    start = time.monotonic()
    submitted = 0
    with Load(daemon.hl7_port, daemon.dicom_port, hl7_senders=4, associations=8) as load:
        while time.monotonic() - start < DURATION_SECONDS:
            due = int((time.monotonic() - start) * CASES_PER_SECOND) + 1
            while submitted < due:
                load.submit(cases.next())
                submitted += 1
            load.raise_failures()
            assert daemon.alive, daemon.log_text()[-3000:]
            time.sleep(0.05)
        offered_seconds = time.monotonic() - start
        try:
            result = finish(daemon, load, settle_timeout=scaled(180, 600))
        finally:
            sampler.stop()
    assert result.studies == submitted and result.messages == submitted

    steady = [rss for at, rss, _ in sampler.samples if at >= WARM_UP_SECONDS] or [sampler.samples[-1][1]]
    window = max(1, min(int(60 / SAMPLE_SECONDS), len(steady) // 4))  # a minute, or a quarter of a short run
    first_window = statistics.mean(steady[:window])
    last_window = statistics.mean(steady[-window:])
    growth = last_window - first_window
    minutes = per_minute(load.ledger.latencies, start, sampler.samples)
    delays = labelling_delays(daemon)
    figures.record(
        duration_seconds=round(offered_seconds), associations=8, hl7_senders=4, cases=submitted,
        instances=result.instances, studies_labelled=result.studies,
        rss_mb={"after_warm_up": round(steady[0] / 2**20, 1), "first_window": round(first_window / 2**20, 1),
                "last_window": round(last_window / 2**20, 1), "max": round(max(steady) / 2**20, 1),
                "growth": round(growth / 2**20, 1), "window_seconds": window * SAMPLE_SECONDS},
        rss_samples_mb=[round(rss / 2**20, 1) for _, rss, _ in sampler.samples],
        max_active_jobs=max((active for _, _, active in sampler.samples), default=0),
        latency_per_minute=minutes,
        labelling_delay_seconds={"p50": round(percentile(delays, 0.5), 2), "p95": round(percentile(delays, 0.95), 2),
                                 "max": round(max(delays, default=0), 2)},
        store_statuses={f"0x{k:04X}": v for k, v in load.ledger.store_statuses.items()},
        hl7_codes=dict(load.ledger.hl7_codes),
    )
    if LONG:
        # Flat: well under what a leak of one object per message or instance would add over 10 minutes.
        assert growth < 64 * 2**20, f"resident memory grew {growth / 2**20:.1f} MB"
        full = [row for row in minutes if row["hl7"]["count"] >= 20]  # type: ignore[index]
        p95s = [row["hl7"]["p95_ms"] for row in full]  # type: ignore[index]
        assert not p95s or max(p95s) < max(1000.0, 5 * statistics.median(p95s)), minutes

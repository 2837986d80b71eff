"""Faults injected under load into `neurolabel run` as a process; nothing acknowledged may be lost, and the
daemon must recover by itself once the fault is gone.

- Triton killed (kill -9, its stubs too) mid-load: reports keep being acknowledged and wait (classify jobs
  pending, never failed); Triton restarted on the same ports: they are labelled.
- The SQLite database locked by another process (BEGIN EXCLUSIVE) for a few seconds: HL7 waits (or answers
  AR/AE, and the sender resends), C-STORE waits (or answers 0xA700); everything acknowledged is stored.
- The storage disk full (a small tmpfs of the test's own; where mounting is not possible, [storage]
  min_free_bytes above the free space, and a restart to lower it): C-STORE answers 0xA700 Out of
  Resources, HL7 carries on, and when space returns the senders' retries go through.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.store.schema import jobs, predictions
from tests.reliability.conftest import DaemonFactory, Figures, scaled
from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.load import Cases, Load, Producer
from tests.reliability.triton_service import TritonService
from tests.reliability.verify import finish

pytestmark = [pytest.mark.triton, pytest.mark.slow]

OUT_OF_RESOURCES = 0xA700


def job_states(daemon: DaemonProcess, kind: str) -> Counter[str]:
    with daemon.reading() as connection:
        rows = connection.execute(
            sa.select(jobs.c.state, sa.func.count()).where(jobs.c.kind == kind).group_by(jobs.c.state)
        ).all()
    return Counter(dict(rows))


def count_predictions(daemon: DaemonProcess) -> int:
    return int(daemon.scalar(sa.select(sa.func.count()).select_from(predictions)) or 0)


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_triton_killed_and_restarted_mid_load(
    daemon_factory: DaemonFactory, triton: TritonService, figures: Figures
) -> None:
    daemon = daemon_factory("triton-fault", triton_url=triton.grpc_url)
    daemon.start()
    cases = Cases("TRITON", seed=3)
    with Load(daemon.hl7_port, daemon.dicom_port, hl7_senders=2, associations=2) as load:
        for case in cases.take(4):
            load.submit(case)
        load.wait_idle(60)
        wait_until(lambda: count_predictions(daemon) >= 4, 60, "the first reports classified")

        triton.kill()
        killed = time.monotonic()
        waiting = cases.take(scaled(6, 20))
        for case in waiting:
            load.submit(case)
        load.wait_idle(60)  # intake goes on without Triton
        time.sleep(scaled(3.0, 15.0))
        classified_while_down = count_predictions(daemon) - 4
        pending = job_states(daemon, "classify")
        assert classified_while_down == 0
        assert pending["failed"] == 0 and pending["pending"] + pending["running"] >= len(waiting), pending

        triton.start()
        back = time.monotonic()
        result = finish(daemon, load)
        recovered = time.monotonic() - back
    figures.record(triton_down_seconds=round(back - killed, 1), reports_waiting=len(waiting),
                   seconds_to_label_after_restart=round(recovered, 1), studies_labelled=result.studies,
                   classify_jobs_failed=job_states(daemon, "classify")["failed"])


@contextmanager
def exclusive_lock(database_path: Path) -> Iterator[None]:
    """Another process's write lock on the SQLite database (what a backup tool or a stuck script does)."""
    connection = sqlite3.connect(database_path, timeout=60, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_database_locked_loses_nothing(daemon_factory: DaemonFactory, triton: TritonService, figures: Figures) -> None:
    daemon = daemon_factory("db-lock", triton_url=triton.grpc_url)
    daemon.start()
    locks = scaled([4.0], [4.0, 12.0, 40.0])  # the last one outlasts SQLite's 30 s busy timeout
    held: list[dict[str, object]] = []
    with Load(daemon.hl7_port, daemon.dicom_port, hl7_senders=2, associations=2) as load:
        Producer(load, Cases("LOCK", seed=5), per_second=2.0).start()
        for seconds in locks:
            time.sleep(2.0)
            before = dict(load.ledger.hl7_codes), dict(load.ledger.store_statuses)
            started = time.monotonic()
            with exclusive_lock(daemon.state / "neurolabel.db"):
                time.sleep(seconds)
                assert daemon.alive
            released = time.monotonic()
            time.sleep(2.0)
            slowest = max((s for t, _, s in load.ledger.latencies if t >= started), default=0.0)
            held.append({
                "seconds": seconds,
                "hl7_answers": _delta(load.ledger.hl7_codes, before[0]),
                "store_statuses": {f"0x{k:04X}": v for k, v in _delta(load.ledger.store_statuses, before[1]).items()},
                "slowest_answer_seconds": round(slowest, 2),
                "answered_after_release_seconds": round(released - started, 1),
            })
        result = finish(daemon, load, idle_timeout=scaled(120, 300), settle_timeout=scaled(180, 300))
    codes = set(load.ledger.hl7_codes)
    assert codes <= {"AA", "AE", "AR"}, load.ledger.hl7_codes
    figures.record(locks=held, studies_labelled=result.studies, hl7_acknowledged=result.messages,
                   instances_acknowledged=result.instances, hl7_resends=load.ledger.hl7_retries,
                   store_resends=load.ledger.store_retries)


def _delta(now: Counter, before: dict) -> dict:  # type: ignore[type-arg]
    return {key: value - before.get(key, 0) for key, value in now.items() if value - before.get(key, 0)}


@contextmanager
def small_filesystem(folder: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of `size_mb` at `folder` when this process may mount (root); yields whether it did."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0750", "tmpfs", str(folder)],
                                capture_output=True, timeout=30)
        mounted = result.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
            if os.path.ismount(folder):
                subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def fill(folder: Path, leave_bytes: int) -> Path:
    """A file that takes all but `leave_bytes` of the filesystem's free space."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    size = max(0, stats.f_bavail * stats.f_frsize - leave_bytes)
    with open(filler, "wb") as handle:
        handle.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            handle.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return filler


def test_disk_full_answers_out_of_resources_and_recovers(
    daemon_factory: DaemonFactory, triton: TritonService, figures: Figures, tmp_path: Path
) -> None:
    storage = tmp_path / "small-disk"
    with small_filesystem(storage, size_mb=8) as mounted:
        extra = {"storage": {"path": str(storage / "dicom"), "min_free_bytes": 0}}
        if not mounted:  # no filesystem of our own: make the daemon believe the disk is full
            free = shutil.disk_usage(tmp_path).free
            extra["storage"]["min_free_bytes"] = free + (1 << 30)
        daemon = daemon_factory("disk-full", triton_url=triton.grpc_url, extra=extra)
        daemon.start()
        filler = fill(storage, leave_bytes=64 * 1024) if mounted else None
        with Load(daemon.hl7_port, daemon.dicom_port, hl7_senders=1, associations=2) as load:
            for case in Cases("FULL", seed=7).take(scaled(4, 10)):
                load.submit(case)
            wait_until(lambda: load.ledger.store_statuses[OUT_OF_RESOURCES] >= 4, 60, "0xA700 answers")
            time.sleep(scaled(2.0, 10.0))
            refused = load.ledger.store_statuses[OUT_OF_RESOURCES]
            assert daemon.alive
            if filler is not None:
                filler.unlink()  # space returns: the daemon goes on by itself
            else:
                daemon.stop()
                daemon.extra["storage"]["min_free_bytes"] = 0
                daemon.__post_init__()
                daemon.start()
            freed = time.monotonic()
            load.wait_idle(120)
            accepted_after = time.monotonic() - freed
            result = finish(daemon, load)
        assert refused >= 4
        daemon.stop()
    figures.record(own_filesystem=mounted, out_of_resources_answers=refused,
                   seconds_to_accept_after_space_returned=round(accepted_after, 1),
                   instances_acknowledged=result.instances, studies_labelled=result.studies,
                   hl7_codes=dict(load.ledger.hl7_codes))

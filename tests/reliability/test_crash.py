"""Crash test: `neurolabel run` killed with SIGKILL at random moments under mixed HL7 and C-STORE load.

The senders keep going through every crash (they resend what was not acknowledged, as real senders
do). After the last restart the test lets everything finish and checks, from the database and the
files, that every acknowledged message and every instance answered with success is labelled and
written back exactly once: no lost report, no duplicate report, labels row or SR, no stray file.
"""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa

from daemon.store.schema import jobs
from tests.reliability.conftest import DaemonFactory, Figures, scaled
from tests.reliability.load import Cases, Load, Producer
from tests.reliability.triton_service import TritonService
from tests.reliability.verify import finish

pytestmark = [pytest.mark.triton, pytest.mark.slow]

CYCLES = scaled(3, 12)
SEED = 20261126


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    daemon_factory: DaemonFactory, triton: TritonService, figures: Figures
) -> None:
    rng = random.Random(SEED)
    daemon = daemon_factory("crash", triton_url=triton.grpc_url)
    daemon.start()
    interrupted: list[dict[str, int]] = []
    started = time.monotonic()
    with Load(daemon.hl7_port, daemon.dicom_port, hl7_senders=2, associations=3) as load:
        Producer(load, Cases("CRASH", instances=3, seed=SEED), backlog=8).start()
        for _ in range(CYCLES):
            time.sleep(rng.uniform(0.5, 4.0))
            load.raise_failures()
            daemon.kill()
            with daemon.reading() as connection:
                running = dict(connection.execute(
                    sa.select(jobs.c.kind, sa.func.count()).where(jobs.c.state == "running").group_by(jobs.c.kind)
                ).all())
            interrupted.append(running)
            time.sleep(rng.uniform(0.0, 0.5))  # senders meet a closed port meanwhile
            daemon.start()
        result = finish(daemon, load, settle_timeout=scaled(180, 300))
    ledger = load.ledger
    assert daemon.kills == CYCLES and result.studies > 0 and result.messages > 0
    figures.record(
        cycles=CYCLES,
        kills=daemon.kills,
        seconds=round(time.monotonic() - started, 1),
        restart_seconds_max=round(max(daemon.start_seconds[1:]), 2),
        jobs_interrupted=sum(sum(item.values()) for item in interrupted),
        jobs_interrupted_by_kind={kind: sum(item.get(kind, 0) for item in interrupted)
                                  for kind in sorted({kind for item in interrupted for kind in item})},
        hl7_acknowledged=result.messages,
        hl7_resends=ledger.hl7_retries,
        instances_acknowledged=result.instances,
        store_resends=ledger.store_retries,
        store_statuses={f"0x{code:04X}": count for code, count in sorted(ledger.store_statuses.items())},
        studies_labelled=result.studies,
        srs=result.srs,
        writebacks=result.writebacks,
    )

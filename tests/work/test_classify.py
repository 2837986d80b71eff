"""The inference worker with a fake classifier: batches, predictions with the job's completion, waiting for Triton."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa

from daemon.app import Services
from daemon.store.database import Database
from daemon.inference.prediction import InferenceUnavailable, ModelInfo, Prediction
from daemon.labels import LABEL_KEYS
from daemon.store.schema import audit_events, predictions
from daemon.work.classify import CLASSIFY, LINK, ClassifyWorker
from daemon.work.runner import BatchHandler
from tests.work.conftest import running, wait_for
from tests.work.rows import add_report, job_rows, labels_of

THRESHOLDS = {key: 0.5 for key in LABEL_KEYS}


class FakeClassifier:
    """Labels a report 'mass' when its text mentions a mass; can be switched unavailable."""

    def __init__(self) -> None:
        self.available = True
        self.calls: list[list[str]] = []
        self.refused = 0

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        if not self.available:
            self.refused += 1
            raise InferenceUnavailable("Triton at 127.0.0.1:1 unreachable")
        self.calls.append(list(texts))
        result = []
        for text in texts:
            labels = labels_of(mass=1) if "mass" in text else labels_of()
            result.append(Prediction({k: 0.9 if v else 0.1 for k, v in labels.items()}, labels, "fake:3"))
        return result

    async def is_ready(self) -> bool:
        return self.available

    async def model_info(self) -> ModelInfo:
        return ModelInfo("fake", "3", LABEL_KEYS, THRESHOLDS)


def enqueue_classify(services: Services, report_ids: Sequence[int]) -> None:
    from daemon.store import queue

    with services.database.begin() as connection:
        for report_id in report_ids:
            queue.enqueue(connection, CLASSIFY, f"report:{report_id}", {"report_id": report_id})
    services.work_signal.notify(CLASSIFY)


def prediction_rows(services: Services) -> list[sa.Row]:
    with services.database.connect() as connection:
        return connection.execute(sa.select(predictions).order_by(predictions.c.report_id)).all()


def states(services: Services, kind: str) -> list[str]:
    return [row.state for row in job_rows(services.database, kind)]


def handler(services: Services, classifier: FakeClassifier, batch_size: int = 8) -> dict[str, BatchHandler]:
    worker = ClassifyWorker(services.database, services.work_signal, classifier)
    return {CLASSIFY: BatchHandler(worker.run, batch_size=batch_size)}


async def test_a_batch_is_classified_in_one_call_and_linking_is_queued(services: Services) -> None:
    classifier = FakeClassifier()
    texts = [f"report {i} {'mass' if i % 2 else ''}" for i in range(5)]
    ids = [add_report(services.database, accession=f"A{i}", text=text) for i, text in enumerate(texts)]
    superseded = add_report(services.database, accession="A9", state="superseded")
    enqueue_classify(services, [*ids, superseded, 10_000])
    async with running(services, handler(services, classifier)):
        await wait_for(lambda: not {"pending", "running"} & set(states(services, CLASSIFY)), what="all handled")
    assert len(classifier.calls) == 1 and len(classifier.calls[0]) == 5
    rows = prediction_rows(services)
    assert [row.report_id for row in rows] == ids
    assert [row.labels["mass"] for row in rows] == [0, 1, 0, 1, 0]
    assert {row.model for row in rows} == {"fake:3"}
    assert rows[0].thresholds == THRESHOLDS
    assert states(services, CLASSIFY) == ["done"] * 6 + ["failed"]  # the unknown report fails, visibly
    links = job_rows(services.database, LINK)
    assert [row.payload["report_id"] for row in links] == ids
    assert [row.key for row in links] == [f"report:{i}" for i in ids]
    with services.database.connect() as connection:
        events = connection.execute(
            sa.select(audit_events.c.identifiers).where(audit_events.c.kind == "report.classified")
            .order_by(audit_events.c.id)
        ).scalars().all()
    assert [(event["report_id"], event["prediction_id"], event["batch_size"]) for event in events] == [
        (row.report_id, row.id, 5) for row in rows
    ]


async def test_while_triton_is_unavailable_reports_wait_and_nothing_is_guessed(services: Services) -> None:
    classifier = FakeClassifier()
    classifier.available = False
    ids = [add_report(services.database, accession=f"A{i}") for i in range(3)]
    enqueue_classify(services, ids)
    async with running(services, handler(services, classifier)):
        # Waiting, and a deferral is no failure: no attempt counted.
        await wait_for(lambda: classifier.refused >= 2 and all_waiting(services), what="jobs deferred twice")
        assert prediction_rows(services) == []
        classifier.available = True
        await wait_for(lambda: states(services, CLASSIFY) == ["done"] * 3, timeout=20, what="classified after recovery")
    assert [row.report_id for row in prediction_rows(services)] == ids


class BusyClassifier(FakeClassifier):
    """Answers only while at most `capacity` reports are with it: beyond that a request waits in the server's
    queue past its deadline, which the client reports as unavailable."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.in_flight = 0
        self.answered: list[int] = []

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        self.in_flight += len(texts)
        try:
            await asyncio.sleep(0.01)
            if self.in_flight > self.capacity:
                self.refused += 1
                raise InferenceUnavailable("deadline exceeded")
            self.answered.append(len(texts))
            return await super().classify(texts)
        finally:
            self.in_flight -= len(texts)


async def test_a_slow_triton_gets_smaller_requests_and_what_it_answers_is_kept(services: Services) -> None:
    classifier = BusyClassifier(capacity=20)
    ids = [add_report(services.database, accession=f"A{i}") for i in range(64)]
    enqueue_classify(services, ids)
    async with running(services, handler(services, classifier, batch_size=64)):
        await wait_for(lambda: states(services, CLASSIFY) == ["done"] * 64, timeout=60, what="all classified")
    assert classifier.refused > 0  # the first 64 at once were too many
    assert sum(classifier.answered) == 64 and max(classifier.answered) <= 16
    assert sorted(row.report_id for row in prediction_rows(services)) == ids
    assert all(row.attempts <= 1 for row in job_rows(services.database, CLASSIFY))


def all_waiting(services: Services) -> bool:
    rows = job_rows(services.database, CLASSIFY)
    return len(rows) == 3 and all(row.state == "pending" and row.attempts == 0 for row in rows)


async def test_a_job_run_twice_stores_one_prediction(services: Services) -> None:
    classifier = FakeClassifier()
    report_id = add_report(services.database, accession="A1")
    worker = ClassifyWorker(services.database, services.work_signal, classifier)
    from tests.work.rows import claim_one

    for attempt in range(2):
        job = claim_one(services.database, CLASSIFY, f"report:{report_id}", {"report_id": report_id})
        assert await worker.run([job]) == {}
    assert len(prediction_rows(services)) == 1
    assert len(classifier.calls) == 2


def test_store_prediction_driver_rows_are_sqlalchemys(database: Database) -> None:
    # In a transaction, and on a connection outside one (which the driver statements begin).
    import datetime as dt

    from daemon.work.classify import store_prediction

    now = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    first, second = add_report(database, accession="A1"), add_report(database, accession="A2")
    ids = {}
    for report_id, thresholds in ((first, THRESHOLDS), (second, None)):
        prediction = Prediction({"mass": 0.25, "bleed": 1e-7}, labels_of(mass=1), "m:1")
        with database.begin() as connection:
            ids[report_id, "driver"] = store_prediction(connection, report_id, prediction, thresholds, now)
            again = store_prediction(connection, report_id, prediction, thresholds, now)
            assert again == ids[report_id, "driver"]
        other = Prediction(prediction.probabilities, prediction.labels, "m:2")
        with database.connect() as connection:
            ids[report_id, "sqlalchemy"] = store_prediction(connection, report_id, other, thresholds, now)
            assert store_prediction(connection, report_id, other, thresholds, now) == ids[report_id, "sqlalchemy"]
            connection.commit()
    with database.connect() as connection:
        found = {row.id: row._asdict() for row in connection.execute(sa.select(predictions))}
    assert len(found) == 4
    for report_id in (first, second):
        driver, alchemy = dict(found[ids[report_id, "driver"]]), dict(found[ids[report_id, "sqlalchemy"]])
        assert (driver.pop("model"), alchemy.pop("model")) == ("m:1", "m:2")
        driver.pop("id"), alchemy.pop("id")
        assert driver == alchemy and driver["created_at"] == now
    with database.connect() as connection:
        raw = connection.execute(sa.text("SELECT thresholds FROM predictions ORDER BY id")).scalars().all()
    assert raw[0] == raw[1] and raw[2] == raw[3]  # as stored: no thresholds written alike (JSON null) by both

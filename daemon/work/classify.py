"""The inference worker: "classify" jobs (payload report_id, queued by HL7 intake), a batch at a time.

It loads the reports of up to `[workers] classify_batch_size` jobs, sends the active ones' texts to the
classifier in one call, and stores each prediction (probabilities, labels, the model's thresholds, model
name:version) in one transaction with the job's completion and the "link" job that follows. A report
no longer active (superseded, withdrawn) completes its job without a prediction. While the classifier
is unavailable (Triton down, starting, model not loaded) the jobs are deferred, not failed: they wait,
with a growing delay, and nothing is guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.audit import trail
from daemon.audit.events import classified_event
from daemon.inference.prediction import Classifier, InferenceUnavailable, Prediction
from daemon.store import driver_cache, queue
from daemon.store.database import Database
from daemon.store.queue import Job
from daemon.store.schema import predictions, reports
from daemon.work.runner import BatchHandler, Defer, JobFailed
from daemon.work.wakeup import WorkSignal

if TYPE_CHECKING:
    from daemon.app import Services
    from daemon.ops.metrics import StageMetrics

log = logging.getLogger("neurolabel.classify")

CLASSIFY = "classify"
LINK = "link"
REPORT_ACTIVE = "active"
# Batches sent to Triton at once. Each batch is already split into concurrent requests by the client;
# a second batch keeps the server busy while the first one's results are committed.
BATCHES_IN_FLIGHT = 2
# Reports per request, and at most with Triton at once (see AdaptiveWindow).
CHUNK_SIZE = 16
MAX_REPORTS_IN_FLIGHT = 128
# Deferral while the classifier is unavailable: doubles from the first to the last.
UNAVAILABLE_FIRST_SECONDS = 1.0
UNAVAILABLE_MAX_SECONDS = 30.0


class AdaptiveWindow:
    """How many reports may be with the classifier at once: halved each time a request fails (a request
    that waits in Triton's queue past its deadline fails, and retrying it as large would fail again),
    grown by one chunk per success. Sent in chunks of at most CHUNK_SIZE, fewer when the window is smaller."""

    def __init__(self, maximum: int = MAX_REPORTS_IN_FLIGHT, chunk: int = CHUNK_SIZE) -> None:
        self._maximum = maximum
        self._chunk = chunk
        self.limit = maximum
        self._in_flight = 0
        self._changed = asyncio.Condition()

    @property
    def chunk_size(self) -> int:
        return max(1, min(self._chunk, self.limit))

    def shrink(self) -> None:
        self.limit = max(1, self.limit // 2)

    def grow(self) -> None:
        self.limit = min(self._maximum, self.limit + self._chunk)

    @contextlib.asynccontextmanager
    async def slot(self, reports: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight == 0 or self._in_flight + reports <= self.limit)
            self._in_flight += reports
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight -= reports
                self._changed.notify_all()


@dataclass(frozen=True)
class ReportToClassify:
    job: Job
    report_id: int
    text: str


class ClassifyWorker:
    """Batch handler of "classify" jobs over any Classifier (TritonClassifier in the daemon)."""

    def __init__(
        self, database: Database, work_signal: WorkSignal, classifier: Classifier, metrics: StageMetrics | None = None
    ) -> None:
        self._database = database
        self._metrics = metrics
        self._signal = work_signal
        self._classifier = classifier
        self._unavailable_since: float | None = None
        self._consecutive_unavailable = 0
        self._window = AdaptiveWindow()

    async def run(self, jobs: Sequence[Job]) -> Mapping[int, BaseException]:
        errors: dict[int, BaseException] = {}
        report_ids: dict[int, int] = {}
        for job in jobs:
            try:
                report_ids[job.id] = int(job.payload["report_id"])
            except (KeyError, TypeError, ValueError):
                errors[job.id] = JobFailed(f"classify payload needs an integer 'report_id', got {dict(job.payload)}")
        rows = await asyncio.to_thread(self._load, sorted(set(report_ids.values())))
        todo: list[ReportToClassify] = []
        inactive: list[Job] = []
        for job in jobs:
            if job.id in errors:
                continue
            row = rows.get(report_ids[job.id])
            if row is None:
                errors[job.id] = JobFailed(f"report {report_ids[job.id]} does not exist")
            elif row.state != REPORT_ACTIVE:
                inactive.append(job)
            else:
                todo.append(ReportToClassify(job, row.id, row.text))
        started = time.perf_counter()
        predictions, thresholds, failures = await self._classify(todo) if todo else ({}, None, {})
        errors.update(failures)
        done = [item for item in todo if item.job.id in predictions]
        results = [predictions[item.job.id] for item in done]
        batch_ms = (time.perf_counter() - started) * 1000
        await asyncio.to_thread(self._store, done, results, thresholds, inactive, batch_ms)
        if done:
            self._signal.notify(LINK)
        return errors

    async def _classify(
        self, todo: Sequence[ReportToClassify]
    ) -> tuple[dict[int, Prediction], dict[str, float] | None, dict[int, BaseException]]:
        """Predictions by job id, the model's thresholds, and the jobs that got none (deferred while Triton
        cannot answer). The reports go in chunks, as many at once as the window allows; what succeeds is
        kept even when other chunks time out."""
        size = self._window.chunk_size
        chunks = [list(todo[i : i + size]) for i in range(0, len(todo), size)]
        outcomes = await asyncio.gather(*(self._classify_chunk(chunk) for chunk in chunks), return_exceptions=True)
        predictions: dict[int, Prediction] = {}
        failures: dict[int, BaseException] = {}
        unavailable: list[ReportToClassify] = []
        problem: InferenceUnavailable | None = None
        for chunk, outcome in zip(chunks, outcomes):
            if isinstance(outcome, InferenceUnavailable):
                unavailable += chunk
                problem = outcome
            elif isinstance(outcome, BaseException):
                failures.update({item.job.id: outcome for item in chunk})
            else:
                predictions.update({item.job.id: prediction for item, prediction in zip(chunk, outcome)})
        if problem is not None:
            deferral = self._note_unavailable(problem, partial=bool(predictions))
            failures.update({item.job.id: deferral for item in unavailable})
        elif predictions and self._unavailable_since is not None:
            log.info("classifier available again after %.0f s", time.monotonic() - self._unavailable_since)
            self._unavailable_since = None
        if predictions:
            self._consecutive_unavailable = 0
        thresholds = await self._thresholds() if predictions else None
        return predictions, thresholds, failures

    async def _classify_chunk(self, chunk: Sequence[ReportToClassify]) -> list[Prediction]:
        async with self._window.slot(len(chunk)):
            started = time.perf_counter()
            try:
                results = await self._classifier.classify([item.text for item in chunk])
            except InferenceUnavailable:
                self._window.shrink()
                raise
            self._window.grow()
        if len(results) != len(chunk):
            raise RuntimeError(f"classifier returned {len(results)} predictions for {len(chunk)} reports")
        elapsed_ms = (time.perf_counter() - started) * 1000
        if self._metrics is not None:
            self._metrics.classify_batch_size.observe(len(chunk))
            self._metrics.triton_seconds.observe(elapsed_ms / 1000)
            self._metrics.triton_ready.set(1)
            self._metrics.reports_classified.inc(len(chunk))
        log.info("classified %d report(s) with %s in %.0f ms", len(chunk), results[0].model if results else "-",
                 elapsed_ms)
        return results

    async def _thresholds(self) -> dict[str, float] | None:
        try:
            return dict((await self._classifier.model_info()).thresholds) or None
        except InferenceUnavailable:
            return None  # stored without them; the predictions themselves are complete

    def _note_unavailable(self, exc: InferenceUnavailable, *, partial: bool = False) -> Defer:
        """The deferral of reports Triton could not take: short when other chunks got through (it is busy,
        not gone), else doubling while it stays unavailable."""
        if partial:
            return Defer(UNAVAILABLE_FIRST_SECONDS, "classifier busy: request deadline passed")
        self._consecutive_unavailable += 1
        if self._metrics is not None:
            self._metrics.triton_unavailable.inc()
            self._metrics.triton_ready.set(0)
        seconds = min(UNAVAILABLE_MAX_SECONDS, UNAVAILABLE_FIRST_SECONDS * 2 ** (self._consecutive_unavailable - 1))
        if self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            log.warning("classifier unavailable, reports wait: %s", exc)
        return Defer(seconds, f"classifier unavailable, again in {seconds:.0f} s")

    def _load(self, report_ids: list[int]) -> dict[int, sa.Row]:
        if not report_ids:
            return {}
        with self._database.connect() as connection:
            rows = connection.execute(
                sa.select(reports.c.id, reports.c.state, reports.c.text).where(reports.c.id.in_(report_ids))
            ).all()
        return {row.id: row for row in rows}

    def _store(
        self,
        todo: Sequence[ReportToClassify],
        results: Sequence[Prediction],
        thresholds: dict[str, float] | None,
        inactive: Sequence[Job],
        batch_ms: float | None = None,
    ) -> None:
        if not todo and not inactive:
            return
        now = queue.utcnow()
        with self._database.begin() as connection:
            events = []
            for item, prediction in zip(todo, results):
                prediction_id = store_prediction(connection, item.report_id, prediction, thresholds, now)
                events.append(classified_event(item.report_id, prediction_id, prediction.model, len(todo), batch_ms))
                queue.complete(connection, item.job)
            for job in inactive:
                queue.complete(connection, job)
            # The batch's audit rows and link jobs with one executemany each (not two statements a report).
            trail.record_many(connection, events)
            queue.enqueue_many(
                connection, [(LINK, f"report:{item.report_id}", {"report_id": item.report_id}) for item in todo]
            )


def store_prediction(
    connection: Connection,
    report_id: int,
    prediction: Prediction,
    thresholds: Mapping[str, float] | None,
    now: dt.datetime,
) -> int:
    """Insert the report's prediction unless it already has one from the same model (a job run twice)."""
    values = {
        "report_id": report_id,
        "probabilities": dict(prediction.probabilities),
        "labels": dict(prediction.labels),
        "thresholds": dict(thresholds) if thresholds else None,
        "model": prediction.model,
        "created_at": now,
    }
    # Driver statements (daemon/store/driver_cache.py): the same rows without SQLAlchemy's per-execution work,
    # for every report.
    existing = driver_cache.first(connection, _EXISTING_PREDICTION, values)
    if existing is not None:
        return int(existing.id)
    return driver_cache.insert(connection, predictions, values)


# store_prediction's look-up, built once with bind parameters.
_EXISTING_PREDICTION = (
    sa.select(predictions.c.id)
    .where(predictions.c.report_id == sa.bindparam("report_id"), predictions.c.model == sa.bindparam("model"))
    .order_by(predictions.c.id.desc())
)


def build_classify_handler(services: Services) -> BatchHandler | None:
    """The inference worker over the configured Triton; None on an intake-only instance ([triton] enabled = false)."""
    settings = services.config.triton
    if not settings.enabled:
        return None
    from daemon.inference.triton_remote import connect_classifier

    batch_size = services.config.workers.classify_batch_size
    # One Triton server, or several (load spread) with TLS/header settings: daemon/inference/triton_remote.py
    classifier = connect_classifier(services.config)
    worker = ClassifyWorker(services.database, services.work_signal, classifier, services.metrics)
    # ClassifyWorker.run completes every job it reports no error for (in _store's transaction).
    return BatchHandler(
        worker.run, batch_size=batch_size, close=classifier.close, max_in_flight=BATCHES_IN_FLIGHT,
        completes_jobs=True,
    )

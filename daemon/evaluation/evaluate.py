"""`neurolabel evaluate`: per-label metrics of a scorer (model, rule-based baseline, or a predictions file).

Reading and checking input files, joining scores to reference labels, and
computing metrics are pure functions here; the CLI only parses arguments.
Bad input raises ``InputError`` with a message that names the file and line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from daemon.evaluation import baseline
from daemon.evaluation.metrics import DEFAULT_BOOTSTRAP, DEFAULT_CONFIDENCE, LabelMetrics, label_metrics
from daemon.labels import LABEL_KEYS, validate_label_mapping

log = logging.getLogger("neurolabel.evaluation")

Reference = Literal["report", "image"]
REFERENCES: tuple[str, ...] = ("report", "image")
MODEL_BATCH = 32


class InputError(ValueError):
    """An input file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class ReportRecord:
    id: str
    text: str
    labels: dict[str, int] | None
    image_labels: dict[str, int] | None

    def reference(self, which: Reference) -> dict[str, int] | None:
        return self.labels if which == "report" else self.image_labels


@dataclass(frozen=True)
class Scores:
    """What a scorer said about each report, in the records' order."""

    source: str
    probabilities: list[dict[str, float]]
    thresholds: dict[str, float | None]
    decisions: list[dict[str, int]] | None = None  # the scorer's own 0/1 labels, when it gave them


# --- input files ---------------------------------------------------------------------------------


def _json_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
                if not isinstance(value, dict):
                    raise InputError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
                yield number, value
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _labels_field(path: Path, number: int, value: Any, field: str) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(f"{path}:{number}: {field!r} must be an object of label: 0|1")
    try:
        return validate_label_mapping(value, partial=True)
    except ValueError as exc:
        raise InputError(f"{path}:{number}: {field}: {exc}") from exc


def read_reports(path: Path) -> list[ReportRecord]:
    """Reports in the ARCHITECTURE.md JSONL format; labels and image_labels may name a subset of labels."""
    records: list[ReportRecord] = []
    seen: dict[str, int] = {}
    for number, obj in _json_lines(path):
        report_id, text = obj.get("id"), obj.get("text")
        if not isinstance(report_id, str) or not report_id:
            raise InputError(f"{path}:{number}: missing or empty string 'id'")
        if not isinstance(text, str):
            raise InputError(f"{path}:{number}: missing string 'text'")
        if report_id in seen:
            raise InputError(f"{path}:{number}: id {report_id!r} repeats line {seen[report_id]}")
        seen[report_id] = number
        records.append(
            ReportRecord(
                id=report_id,
                text=text,
                labels=_labels_field(path, number, obj.get("labels"), "labels"),
                image_labels=_labels_field(path, number, obj.get("image_labels"), "image_labels"),
            )
        )
    if not records:
        raise InputError(f"{path}: no reports")
    return records


@dataclass(frozen=True)
class PredictionLine:
    probabilities: dict[str, float]
    labels: dict[str, int] | None
    model: str


def read_predictions(path: Path) -> dict[str, PredictionLine]:
    """`neurolabel classify` output: id -> probabilities (every label), labels (optional), model."""
    predictions: dict[str, PredictionLine] = {}
    for number, obj in _json_lines(path):
        report_id, probabilities = obj.get("id"), obj.get("probabilities")
        if not isinstance(report_id, str) or not report_id:
            raise InputError(f"{path}:{number}: missing or empty string 'id'")
        if not isinstance(probabilities, dict):
            raise InputError(f"{path}:{number}: missing object 'probabilities'")
        unknown = sorted(set(probabilities) - set(LABEL_KEYS))
        if unknown:
            raise InputError(f"{path}:{number}: unknown label key {unknown[0]!r} in 'probabilities'")
        missing = [key for key in LABEL_KEYS if key not in probabilities]
        if missing:
            raise InputError(f"{path}:{number}: 'probabilities' has no {missing[0]!r}")
        values: dict[str, float] = {}
        for key in LABEL_KEYS:
            value = probabilities[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise InputError(f"{path}:{number}: probability of {key!r} must be a number, got {value!r}")
            values[key] = float(value)
        labels = _labels_field(path, number, obj.get("labels"), "labels")
        predictions[report_id] = PredictionLine(values, labels, str(obj.get("model", "")))
    if not predictions:
        raise InputError(f"{path}: no predictions")
    return predictions


# --- scorers -------------------------------------------------------------------------------------


def baseline_scores(records: Sequence[ReportRecord]) -> Scores:
    probabilities = baseline.score_reports([record.text for record in records])
    return Scores(
        source="rule-based baseline",
        probabilities=probabilities,
        thresholds={key: baseline.THRESHOLD for key in LABEL_KEYS},
    )


def _inferred_threshold(probabilities: Sequence[float], decisions: Sequence[int]) -> float | None:
    """The threshold a scorer's own decisions imply (midpoint of the gap), or None if they imply none."""
    positive = [p for p, d in zip(probabilities, decisions) if d]
    negative = [p for p, d in zip(probabilities, decisions) if not d]
    if not positive or not negative or max(negative) >= min(positive):
        return None
    return (max(negative) + min(positive)) / 2.0


def prediction_file_scores(records: Sequence[ReportRecord], path: Path) -> Scores:
    """Scores from a classify output file, joined to the reports by id.

    When every line carries the model's 0/1 labels, those decisions are
    evaluated (the model's own thresholds) and the threshold shown is the one
    they imply; otherwise the threshold is 0.5.
    """
    predictions = read_predictions(path)
    missing = [record.id for record in records if record.id not in predictions]
    if missing:
        raise InputError(f"{path}: no prediction for report id {missing[0]!r} ({len(missing)} missing)")
    lines = [predictions[record.id] for record in records]
    probabilities = [line.probabilities for line in lines]
    models = sorted({line.model for line in lines if line.model})
    source = f"predictions {path.name}" + (f" ({', '.join(models)})" if models else "")
    if all(line.labels is not None and set(line.labels) == set(LABEL_KEYS) for line in lines):
        decisions = [dict(line.labels or {}) for line in lines]
        thresholds = {
            key: _inferred_threshold([p[key] for p in probabilities], [d[key] for d in decisions])
            for key in LABEL_KEYS
        }
        return Scores(source, probabilities, thresholds, decisions)
    return Scores(source, probabilities, {key: 0.5 for key in LABEL_KEYS})


def model_scores(records: Sequence[ReportRecord], model_repository: Path, model_name: str) -> Scores:
    """Scores of the shipped model, run in-process (the same computation the Triton model does)."""
    from daemon.inference.local import LocalClassifier  # onnxruntime: imported only when the model is asked for

    classifier = LocalClassifier(model_repository, model_name)
    texts = [record.text for record in records]
    started = time.perf_counter()
    predictions = []
    for start in range(0, len(texts), MODEL_BATCH):
        predictions.extend(classifier.classify_sync(texts[start:start + MODEL_BATCH]))
    log.info("model scored %d reports in %.1f s", len(texts), time.perf_counter() - started)
    import asyncio

    info = asyncio.run(classifier.model_info())
    return Scores(
        source=f"model {info.model}",
        probabilities=[p.probabilities for p in predictions],
        thresholds={key: float(info.thresholds[key]) for key in LABEL_KEYS},
        decisions=[p.labels for p in predictions],
    )


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    source: str
    reference: str
    reports: int
    metrics: tuple[LabelMetrics, ...]
    n_boot: int
    seed: int
    confidence: float

    @property
    def mean_f1(self) -> float | None:
        values = [m.f1 for m in self.metrics if m.f1 is not None]
        return float(np.mean(values)) if values else None

    @property
    def mean_auc(self) -> float | None:
        values = [m.auc for m in self.metrics if m.auc is not None]
        return float(np.mean(values)) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "reference": self.reference,
            "reports": self.reports,
            "bootstrap": {"resamples": self.n_boot, "seed": self.seed, "confidence": self.confidence},
            "labels": {m.label: m.to_json() for m in self.metrics},
            "mean_f1": self.mean_f1,
            "mean_auc": self.mean_auc,
        }


def evaluate(
    records: Sequence[ReportRecord],
    scores: Scores,
    reference: Reference = "report",
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> EvaluationResult:
    """Metrics per label over the reports whose reference names that label."""
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}")
    if len(scores.probabilities) != len(records):
        raise ValueError(f"{len(records)} reports but {len(scores.probabilities)} scores")
    field = "labels" if reference == "report" else "image_labels"
    if not any(record.reference(reference) for record in records):
        raise InputError(f"no report has {field!r}; nothing to evaluate against")
    results: list[LabelMetrics] = []
    for key in LABEL_KEYS:
        rows = [i for i, record in enumerate(records) if key in (record.reference(reference) or {})]
        if not rows:
            continue
        truth = [records[i].reference(reference)[key] for i in rows]  # type: ignore[index]
        probabilities = [scores.probabilities[i][key] for i in rows]
        threshold = scores.thresholds[key]
        decisions = [scores.decisions[i][key] for i in rows] if scores.decisions is not None else None
        results.append(
            label_metrics(
                key, truth, probabilities, threshold, predicted=decisions,
                n_boot=n_boot, seed=seed, confidence=confidence,
            )
        )
    return EvaluationResult(scores.source, reference, len(records), tuple(results), n_boot, seed, confidence)


# --- output --------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_table(result: EvaluationResult, console: Any = None) -> None:
    """A human-readable table (rich)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)  # piped or redirected: no reason to squeeze the table into 80 columns
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        title=f"{result.source} vs {result.reference} labels ({result.reports} reports)",
        caption=f"AUC interval: {result.confidence:.0%} percentile bootstrap, {result.n_boot} resamples, "
        f"seed {result.seed}. acc/sens/spec/F1 at threshold thr. n/a: undefined (e.g. one class present).",
    )
    table.add_column("label", no_wrap=True)
    for column in ("n", "pos", "AUC", f"{result.confidence:.0%} CI", "acc", "sens", "spec", "F1", "thr"):
        table.add_column(column, justify="right", no_wrap=True)
    for m in result.metrics:
        interval = f"{m.auc_ci[0]:.3f}-{m.auc_ci[1]:.3f}" if m.auc_ci else "n/a"
        table.add_row(
            m.label, str(m.n), str(m.positives), _fmt(m.auc), interval, _fmt(m.accuracy), _fmt(m.sensitivity),
            _fmt(m.specificity), _fmt(m.f1), _fmt(m.threshold, 2),
        )
    table.add_section()
    table.add_row("mean", "", "", _fmt(result.mean_auc), "", "", "", "", _fmt(result.mean_f1), "")
    console.print(table)


def result_json(result: EvaluationResult) -> str:
    return json.dumps(result.to_json(), indent=2)


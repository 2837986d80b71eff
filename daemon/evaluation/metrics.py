"""Binary classification metrics for one label: AUC-ROC with a bootstrap interval, and metrics at a threshold.

Pure numpy. A prediction is positive when ``score >= threshold``. Metrics that
are undefined for the data (AUC with one class present, sensitivity with no
positives, ...) are ``None``, never a made-up number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

ThresholdRule = Literal["f1", "youden"]
THRESHOLD_RULES: tuple[str, ...] = ("f1", "youden")
DEFAULT_BOOTSTRAP = 2000
DEFAULT_CONFIDENCE = 0.95


def _arrays(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true, dtype=np.int64).ravel()
    score = np.asarray(y_score, dtype=np.float64).ravel()
    if truth.shape != score.shape:
        raise ValueError(f"{truth.size} labels but {score.size} scores")
    if truth.size and not np.isin(truth, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(score).all():
        raise ValueError("scores must be finite")
    return truth, score


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], sorted_values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)); ties count one half. None with one class."""
    truth, score = _arrays(y_true, y_score)
    return _auc(truth, score)


def _auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(score)
    u = ranks[truth == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def bootstrap_auc_interval(
    y_true: Sequence[int] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the AUC (resampling reports with replacement; seeded).

    Resamples that happen to hold one class only are drawn again, so every
    kept resample has an AUC. None when the data hold one class only.
    """
    truth, score = _arrays(y_true, y_score)
    if _auc(truth, score) is None:
        return None
    rng = np.random.default_rng(seed)
    n = truth.size
    values: list[float] = []
    attempts = 0
    while len(values) < n_boot and attempts < n_boot * 20:
        attempts += 1
        idx = rng.integers(0, n, n)
        value = _auc(truth[idx], score[idx])
        if value is not None:
            values.append(value)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    @property
    def sensitivity(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None


def confusion(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray, threshold: float) -> Confusion:
    truth, score = _arrays(y_true, y_score)
    predicted = score >= threshold
    positive = truth == 1
    return Confusion(
        tp=int(np.sum(predicted & positive)),
        fp=int(np.sum(predicted & ~positive)),
        tn=int(np.sum(~predicted & ~positive)),
        fn=int(np.sum(~predicted & positive)),
    )


def choose_threshold(
    y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray, rule: ThresholdRule = "f1"
) -> float:
    """The threshold that maximises F1 ("f1") or Youden's J = sensitivity + specificity - 1 ("youden").

    Candidates are the midpoints between consecutive distinct scores (plus one
    below the lowest and one above the highest), so the chosen threshold sits
    in the middle of a gap rather than on a training score. Ties go to the
    candidate closest to 0.5. With one class present (nothing to choose
    from) the answer is 0.5.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected one of {', '.join(THRESHOLD_RULES)}")
    truth, score = _arrays(y_true, y_score)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return 0.5
    distinct = np.unique(score)
    candidates = np.r_[distinct[0] - 1e-6, (distinct[1:] + distinct[:-1]) / 2.0, distinct[-1] + 1e-6]
    # Counts of positives/negatives at or above each candidate, in one pass over the sorted scores.
    order = np.argsort(score)
    sorted_score, sorted_truth = score[order], truth[order]
    below = np.searchsorted(sorted_score, candidates, side="left")
    pos_below = np.r_[0, np.cumsum(sorted_truth)][below]
    neg_below = below - pos_below
    tp = positives - pos_below
    fp = negatives - neg_below
    fn = pos_below
    if rule == "f1":
        objective = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    else:
        objective = tp / positives + (negatives - fp) / negatives - 1.0
    best = objective.max()
    tied = candidates[np.isclose(objective, best, rtol=0, atol=1e-12)]
    return float(tied[np.argmin(np.abs(tied - 0.5))])


@dataclass(frozen=True)
class LabelMetrics:
    label: str
    n: int
    positives: int
    threshold: float | None  # None: the scorer's own decisions imply no single threshold
    auc: float | None
    auc_ci: tuple[float, float] | None
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None
    f1: float | None
    tp: int
    fp: int
    tn: int
    fn: int

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["auc_ci"] = list(self.auc_ci) if self.auc_ci else None
        return data


def label_metrics(
    label: str,
    y_true: Sequence[int] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    threshold: float | None,
    *,
    predicted: Sequence[int] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> LabelMetrics:
    """AUC (with interval) from the scores; the rest from ``predicted`` when given, else from score >= threshold."""
    truth, score = _arrays(y_true, y_score)
    if predicted is not None:
        counts = confusion(truth, np.asarray(predicted, dtype=np.float64), 0.5)
    elif threshold is not None:
        counts = confusion(truth, score, threshold)
    else:
        raise ValueError("a threshold or the predicted labels are needed")
    return LabelMetrics(
        label=label,
        n=int(truth.size),
        positives=int(truth.sum()),
        threshold=None if threshold is None else float(threshold),
        auc=_auc(truth, score),
        auc_ci=bootstrap_auc_interval(truth, score, n_boot=n_boot, confidence=confidence, seed=seed),
        accuracy=counts.accuracy,
        sensitivity=counts.sensitivity,
        specificity=counts.specificity,
        f1=counts.f1,
        tp=counts.tp,
        fp=counts.fp,
        tn=counts.tn,
        fn=counts.fn,
    )

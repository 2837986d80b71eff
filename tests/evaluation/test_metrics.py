"""Metrics against values worked out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from daemon.evaluation.metrics import (
    average_ranks,
    bootstrap_auc_interval,
    choose_threshold,
    confusion,
    label_metrics,
    roc_auc,
)


def _auc_by_pairs(y_true: list[int], y_score: list[float]) -> float:
    """The definition: P(score of a positive > score of a negative), ties counting one half."""
    pos = [s for t, s in zip(y_true, y_score) if t]
    neg = [s for t, s in zip(y_true, y_score) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    ("y_true", "y_score", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # the classic example: 3 of 4 pairs ordered
        ([0, 1], [0.2, 0.9], 1.0),
        ([1, 0], [0.2, 0.9], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 0, 1, 1], [0.0, 0.5, 0.5, 1.0], 0.875),  # one tied pair of four: (3 + 0.5) / 4
        ([1, 1, 0, 0, 0], [1.0, 0.5, 0.5, 0.5, 0.0], 5 / 6),  # 1.0 beats all 3; 0.5 ties two (1) and beats one
    ],
)
def test_auc_known_values(y_true: list[int], y_score: list[float], expected: float) -> None:
    assert roc_auc(y_true, y_score) == pytest.approx(expected)


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y_true = rng.integers(0, 2, n).tolist()
        y_score = (rng.integers(0, 5, n) / 4).tolist()  # many ties
        if len(set(y_true)) < 2:
            continue
        assert roc_auc(y_true, y_score) == pytest.approx(_auc_by_pairs(y_true, y_score))


def test_auc_single_class_is_none() -> None:
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert roc_auc([0, 0], [0.2, 0.5]) is None
    assert bootstrap_auc_interval([0, 0], [0.2, 0.5]) is None


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_confusion_and_rates_at_threshold() -> None:
    y_true = [1, 1, 1, 0, 0, 0, 0, 1]
    y_score = [0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.5, 0.5]
    counts = confusion(y_true, y_score, 0.5)  # score >= 0.5 is positive
    assert (counts.tp, counts.fp, counts.tn, counts.fn) == (3, 2, 2, 1)
    assert counts.accuracy == pytest.approx(5 / 8)
    assert counts.sensitivity == pytest.approx(3 / 4)
    assert counts.specificity == pytest.approx(2 / 4)
    assert counts.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))


def test_undefined_rates_are_none() -> None:
    counts = confusion([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    assert counts.sensitivity is None
    assert counts.specificity == 1.0
    assert counts.f1 is None  # no positives, none predicted
    metrics = label_metrics("mass", [0, 0, 0], [0.1, 0.2, 0.3], 0.5, n_boot=50)
    assert metrics.auc is None and metrics.auc_ci is None
    assert metrics.to_json()["auc"] is None


def test_bootstrap_interval_is_seeded_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    y_score = y_true * 0.6 + rng.random(200)
    auc = roc_auc(y_true, y_score)
    first = bootstrap_auc_interval(y_true, y_score, n_boot=500, seed=11)
    second = bootstrap_auc_interval(y_true, y_score, n_boot=500, seed=11)
    other = bootstrap_auc_interval(y_true, y_score, n_boot=500, seed=12)
    assert first == second
    assert first != other
    assert first is not None and auc is not None
    assert first[0] < auc < first[1]
    assert 0.0 <= first[0] and first[1] <= 1.0


def test_bootstrap_of_a_perfect_separation_is_one() -> None:
    assert bootstrap_auc_interval([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_boot=200) == (1.0, 1.0)


def test_choose_threshold_f1_and_youden() -> None:
    y_true = [0, 0, 0, 1, 1, 1]
    y_score = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    # Perfect separation: every candidate in the gap 0.3..0.7 is optimal; the midpoint is 0.5.
    assert choose_threshold(y_true, y_score, "f1") == pytest.approx(0.5)
    assert choose_threshold(y_true, y_score, "youden") == pytest.approx(0.5)
    y_true = [0, 0, 1, 0, 1, 1]
    y_score = [0.1, 0.2, 0.3, 0.4, 0.8, 0.9]
    # F1: threshold 0.25 gives tp=3, fp=1 -> F1 = 6/7; threshold 0.6 gives tp=2, fn=1 -> 0.8.
    assert choose_threshold(y_true, y_score, "f1") == pytest.approx(0.25)
    # Youden: 0.25 -> 1 + 2/3 - 1 = 0.667; 0.6 -> 2/3 + 1 - 1 = 0.667 (tie), 0.35: 2/3+2/3-1; tie -> closest to 0.5.
    assert choose_threshold(y_true, y_score, "youden") == pytest.approx(0.6)


def test_choose_threshold_single_class_and_bad_rule() -> None:
    assert choose_threshold([1, 1], [0.2, 0.3]) == 0.5
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold([0, 1], [0.2, 0.3], "accuracy")  # type: ignore[arg-type]


def test_shape_and_value_errors() -> None:
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])

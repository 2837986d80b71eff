"""The synthetic report generator: reproducible, labels consistent with the policy, broad coverage."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from daemon.labels import CATEGORY_KEYS, LABEL_KEYS, enforce_abnormal_implication, validate_label_mapping
from daemon.training.findings import CATEGORY_FINDINGS, INCIDENTAL, NORMAL_FOR_AGE, OTHER_ABNORMAL
from daemon.training.generator import (
    MAX_WORDS,
    MIN_WORDS,
    STYLES,
    GeneratedReport,
    generate_corpus,
    generate_report,
    write_corpus,
)

SAMPLE = 2000


@pytest.fixture(scope="module")
def sample() -> list[GeneratedReport]:
    return list(generate_corpus(SAMPLE, seed=1234))


def test_same_seed_same_reports_and_index_independent_of_n() -> None:
    first = [r.to_record() for r in generate_corpus(30, seed=5)]
    again = [r.to_record() for r in generate_corpus(30, seed=5)]
    assert first == again
    assert generate_report(5, 17).to_record() == first[17]
    assert [r.to_record() for r in generate_corpus(10, seed=5, start=20)] == first[20:30]
    other = [r.to_record() for r in generate_corpus(30, seed=6)]
    assert [r["text"] for r in other] != [r["text"] for r in first]


def test_write_corpus_is_byte_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_corpus(a, 50, seed=3)
    write_corpus(b, 50, seed=3)
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    record = json.loads(lines[0])
    assert set(record) == {"id", "text", "labels"}
    assert validate_label_mapping(record["labels"]) == record["labels"]


def test_labels_follow_the_policy(sample: list[GeneratedReport]) -> None:
    for report in sample:
        assert list(report.labels) == list(LABEL_KEYS)
        assert report.labels == enforce_abnormal_implication(report.labels), report.id
        if not report.findings:
            assert report.labels == {key: 0 for key in LABEL_KEYS}, report.id


def test_labels_come_from_findings_tables(sample: list[GeneratedReport]) -> None:
    by_name = {f.name: f for pool in (*CATEGORY_FINDINGS.values(), OTHER_ABNORMAL) for f in pool}
    for report in sample:
        expected = {key: 0 for key in LABEL_KEYS}
        for name in report.findings:
            for category in by_name[name].cats:
                expected[category] = 1
            expected["abnormal"] = 1
        assert report.labels == expected, report.id


def test_every_label_has_positives_and_hard_negatives(sample: list[GeneratedReport]) -> None:
    positives = Counter(key for r in sample for key in LABEL_KEYS if r.labels[key])
    hard = Counter((key, kind) for r in sample for key, kind in r.hard_negatives)
    for key in LABEL_KEYS:
        assert 0.08 * SAMPLE < positives[key] < 0.9 * SAMPLE, (key, positives[key])
        for kind in ("negated", "question", "refuted"):
            assert hard[(key, kind)] >= 20, (key, kind, hard[(key, kind)])
        assert any(r.labels[key] == 0 and any(k == key for k, _ in r.hard_negatives) for r in sample)
    # abnormal = 0 reports that still say something: incidental or normal-for-age findings
    benign_words = ("normal for age", "appropriate for", "pineal cyst", "mucosal thickening", "arachnoid granulation")
    assert sum(1 for r in sample if not r.labels["abnormal"] and any(w in r.text.lower() for w in benign_words)) > 50


def test_every_finding_is_used(sample: list[GeneratedReport]) -> None:
    used = {name for r in sample for name in r.findings}
    abnormal_names = {f.name for pool in (*CATEGORY_FINDINGS.values(), OTHER_ABNORMAL) for f in pool}
    assert len(used) > 0.9 * len(abnormal_names)
    for category, pool in CATEGORY_FINDINGS.items():
        assert len(pool) >= 8, category
    assert len(INCIDENTAL) >= 10 and len(NORMAL_FOR_AGE) >= 2


def test_lengths_styles_and_diversity(sample: list[GeneratedReport]) -> None:
    words = sorted(len(r.text.split()) for r in sample)
    assert words[0] >= MIN_WORDS and words[-1] <= MAX_WORDS
    assert words[len(words) // 2] > 60  # realistic median
    assert words[int(len(words) * 0.95)] > 180  # and a long tail
    styles = Counter(r.style for r in sample)
    assert set(styles) == set(STYLES)
    assert len({r.text for r in sample}) == SAMPLE
    texts = [r.text for r in sample]
    assert sum("haemorrhage" in t for t in texts) and sum("hemorrhage" in t for t in texts)  # UK and US
    assert sum(t.isupper() for t in texts) > 0


def test_clinical_question_mentions_without_confirmation_are_zero(sample: list[GeneratedReport]) -> None:
    asked = [(r, key) for r in sample for key, kind in r.hard_negatives if kind == "question"]
    assert len(asked) > 100
    assert all(r.labels[key] == 0 for r, key in asked)


def test_hard_negatives_only_for_zero_labels(sample: list[GeneratedReport]) -> None:
    for report in sample:
        for key, _kind in report.hard_negatives:
            assert report.labels[key] == 0, (report.id, key)
    assert CATEGORY_KEYS  # the categories exist

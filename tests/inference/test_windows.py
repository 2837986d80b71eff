"""The tokenise -> window -> batch -> pool path and threshold application (pure; real tokenizer file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.inference.metadata import latest_version_dir
from daemon.inference.windows import (
    ReportTokenizer,
    SpecialIds,
    WindowSpec,
    apply_thresholds,
    batch_windows,
    make_windows,
    plan_chunks,
    pool_windows,
    sigmoid,
    window_spans,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = latest_version_dir(REPO_ROOT / "triton_models" / "neurolabel_report") / "tokenizer.json"
SPECIAL = SpecialIds(cls=101, sep=102, pad=0)


@settings(max_examples=300, deadline=None)
@given(
    n_tokens=st.integers(min_value=0, max_value=3000),
    max_tokens=st.integers(min_value=8, max_value=600),
    overlap_share=st.floats(min_value=0.0, max_value=0.9),
)
def test_windows_cover_every_token_and_own_each_exactly_once(n_tokens: int, max_tokens: int, overlap_share: float) -> None:
    spec = WindowSpec(max_tokens=max_tokens, overlap=int((max_tokens - 2) * overlap_share))
    spans = window_spans(n_tokens, spec)
    owned = np.zeros(n_tokens, dtype=int)
    for span in spans:
        assert 0 <= span.start <= span.own_start <= span.own_stop <= span.stop <= n_tokens
        assert span.stop - span.start <= spec.content_tokens
        owned[span.own_start : span.own_stop] += 1
    assert (owned == 1).all()
    assert spans[0].start == 0 and spans[-1].stop == n_tokens
    for left, right in zip(spans, spans[1:]):
        assert left.stop - right.start >= spec.overlap  # neighbours share at least `overlap` tokens
        assert left.own_stop == right.own_start
    if len(spans) > 1:
        lengths = {span.stop - span.start for span in spans}
        assert len(lengths) == 1  # equal windows, no short tail
        # No more windows than needed.
        assert len(spans) - 1 < (n_tokens - spec.overlap) / spec.stride


def test_short_report_is_one_window_with_cls_and_sep() -> None:
    windows = make_windows([[5, 6, 7]], WindowSpec(max_tokens=16, overlap=4), SPECIAL)
    assert len(windows) == 1
    assert windows[0].ids == (101, 5, 6, 7, 102)
    assert (windows[0].own_start, windows[0].own_stop) == (1, 4)


def test_empty_report_pools_its_cls_token() -> None:
    windows = make_windows([[]], WindowSpec(max_tokens=16, overlap=4), SPECIAL)
    assert [w.ids for w in windows] == [(101, 102)]
    assert (windows[0].own_start, windows[0].own_stop) == (0, 1)


def test_long_report_windows_reassemble_the_report() -> None:
    tokens = list(range(1000, 1100))
    spec = WindowSpec(max_tokens=22, overlap=6)
    windows = make_windows([tokens, [7, 8]], spec, SPECIAL)
    first = [w for w in windows if w.report == 0]
    assert len(first) > 1 and all(len(w.ids) <= spec.max_tokens for w in first)
    assert all(w.ids[0] == SPECIAL.cls and w.ids[-1] == SPECIAL.sep for w in first)
    owned = [t for w in first for t in w.ids[w.own_start : w.own_stop]]
    assert owned == tokens  # every token, in order, once
    assert windows[-1].report == 1


def test_batch_pads_to_the_longest_window_and_marks_owned_tokens() -> None:
    windows = make_windows([[5, 6, 7], [8]], WindowSpec(max_tokens=16, overlap=4), SPECIAL)
    batch = batch_windows(windows, 2, SPECIAL.pad)
    assert batch.input_ids.tolist() == [[101, 5, 6, 7, 102], [101, 8, 102, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.pool_mask.tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]]
    assert batch.report_index.tolist() == [0, 1] and batch.n_reports == 2
    assert batch.input_ids.dtype == np.int64


def test_chunks_hold_every_window_once_within_their_budget() -> None:
    spec = WindowSpec(max_tokens=20, overlap=4)
    windows = make_windows([list(range(n)) for n in (3, 50, 17, 0, 120, 8)], spec, SPECIAL)
    chunks = plan_chunks(windows, max_windows=4, max_cells=60)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(windows)))
    for chunk in chunks:
        width = max(len(windows[i].ids) for i in chunk)
        assert len(chunk) <= 4 and (len(chunk) * width <= 60 or len(chunk) == 1)


def test_one_window_pools_to_its_own_logits() -> None:
    logits = np.array([[0.5, -2.0], [3.0, 1.0]])
    lse = np.array([[1.0, 7.0], [-3.0, 0.0]])
    assert np.allclose(pool_windows(logits, lse, np.array([0, 1]), 2), logits)


def test_window_pooling_equals_attention_over_the_whole_report() -> None:
    """Attention pooling with a linear head, computed over all tokens at once or per window, agrees."""
    rng = np.random.default_rng(0)
    n_tokens, hidden, labels = 23, 5, 3
    states = rng.normal(size=(n_tokens, hidden))
    scores = rng.normal(size=(n_tokens, labels)) * 3
    head = rng.normal(size=(labels, hidden))
    attention = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
    whole = np.einsum("tl,th,lh->l", attention, states, head)

    spans = window_spans(n_tokens, WindowSpec(max_tokens=10, overlap=3))
    assert len(spans) > 2
    window_logits, window_lse = [], []
    for span in spans:
        own = slice(span.own_start, span.own_stop)
        s = scores[own]
        lse = np.log(np.exp(s).sum(0))
        a = np.exp(s - lse)
        window_logits.append(np.einsum("tl,th,lh->l", a, states[own], head))
        window_lse.append(lse)
    pooled = pool_windows(np.array(window_logits), np.array(window_lse), np.zeros(len(spans), dtype=int), 1)
    assert np.allclose(pooled[0], whole)


def test_pooling_keeps_reports_apart() -> None:
    logits = np.array([[1.0], [3.0], [10.0]])
    lse = np.array([[0.0], [0.0], [5.0]])
    pooled = pool_windows(logits, lse, np.array([0, 0, 1]), 2)
    assert pooled[:, 0].tolist() == pytest.approx([2.0, 10.0])


def test_sigmoid_is_stable_at_extremes() -> None:
    values = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert values.tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_thresholds_are_inclusive_and_a_category_implies_abnormal() -> None:
    thresholds = [0.5, 0.3, 0.7]
    probabilities = np.array(
        [
            [0.5, 0.1, 0.1],  # exactly at the threshold: positive
            [0.49, 0.1, 0.1],
            [0.1, 0.3, 0.1],  # category positive, abnormal below its threshold: abnormal becomes 1
            [0.9, 0.29, 0.69],
        ]
    )
    labels = apply_thresholds(probabilities, thresholds)
    assert labels.dtype == np.int8
    assert labels.tolist() == [[1, 0, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]]


def test_threshold_count_must_match() -> None:
    with pytest.raises(ValueError, match="3 probabilities but 2 thresholds"):
        apply_thresholds(np.zeros((1, 3)), [0.5, 0.5])


@pytest.mark.parametrize("max_tokens, overlap", [(3, 0), (10, 8), (10, -1)])
def test_bad_window_settings_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        WindowSpec(max_tokens=max_tokens, overlap=overlap)


def test_real_tokenizer_windows_a_long_report_without_losing_tokens() -> None:
    tokenizer = ReportTokenizer(TOKENIZER)
    assert tokenizer.special == SpecialIds(cls=101, sep=102, pad=0)
    sentence = "No acute infarct. Extensive periventricular white matter hyperintensities (Fazekas 3). "
    long_text = sentence * 60
    short_text = "Normal MRI brain."
    spec = WindowSpec(max_tokens=128, overlap=32)
    ids = tokenizer.encode([long_text, short_text])
    assert len(ids[0]) > 3 * spec.content_tokens
    windows = tokenizer.windows([long_text, short_text], spec)
    long_windows = [w for w in windows if w.report == 0]
    assert len(long_windows) >= 4
    assert [t for w in long_windows for t in w.ids[w.own_start : w.own_stop]] == ids[0]
    assert [w.ids for w in windows if w.report == 1] == [(101, *ids[1], 102)]
    # Uncased WordPiece: case and line breaks do not change the tokens.
    assert tokenizer.encode(["NORMAL MRI\nBRAIN."]) == tokenizer.encode([short_text])

"""Report text -> overlapping token windows -> padded arrays, and window outputs -> one result per report.

Shared by training (torch) and serving (onnxruntime, Triton); needs only numpy and `tokenizers`.

A report longer than one window is split into windows of `max_tokens` (including [CLS] and [SEP]) that
overlap by at least `overlap` content tokens. Every content token is *owned* by exactly one window (the
one where it sits farther from the edge), and only owned tokens take part in attention pooling, so the
report-level result is attention pooling over every token of the report exactly once: nothing is
truncated and nothing is counted twice.

The model returns, per window and label, a logit computed from the window's attention-pooled vector and
the log-sum-exp of that label's attention scores over the window's owned tokens. Because each label's
head is linear in the pooled vector, softmax-weighting the window logits by their log-sum-exp values
gives exactly the logit of attention pooling over the whole report (`pool_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
SPECIAL_TOKENS_PER_WINDOW = 2


@dataclass(frozen=True)
class WindowSpec:
    """How reports are cut into encoder windows."""

    max_tokens: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.max_tokens <= SPECIAL_TOKENS_PER_WINDOW + 1:
            raise ValueError(f"max_tokens must exceed {SPECIAL_TOKENS_PER_WINDOW + 1}, got {self.max_tokens}")
        if not 0 <= self.overlap < self.content_tokens:
            raise ValueError(f"overlap must be in [0, {self.content_tokens}), got {self.overlap}")

    @property
    def content_tokens(self) -> int:
        return self.max_tokens - SPECIAL_TOKENS_PER_WINDOW

    @property
    def stride(self) -> int:
        return self.content_tokens - self.overlap


@dataclass(frozen=True)
class Span:
    """One window over a report's content tokens: [start, stop) encoded, [own_start, own_stop) pooled."""

    start: int
    stop: int
    own_start: int
    own_stop: int


@dataclass(frozen=True)
class SpecialIds:
    cls: int
    sep: int
    pad: int


@dataclass(frozen=True)
class WindowBatch:
    """Padded arrays for the encoder plus the report each window belongs to."""

    input_ids: np.ndarray  # int64 [windows, tokens]
    attention_mask: np.ndarray  # int64 [windows, tokens]
    pool_mask: np.ndarray  # int64 [windows, tokens]: 1 where the token is owned by this window
    report_index: np.ndarray  # int64 [windows]
    n_reports: int

    @property
    def n_windows(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class Window:
    report: int
    ids: tuple[int, ...]  # with [CLS] and [SEP]
    own_start: int  # positions within ids
    own_stop: int


def window_spans(n_tokens: int, spec: WindowSpec) -> list[Span]:
    """Windows covering content tokens [0, n_tokens); each token owned by exactly one window.

    A report that needs k windows gets k windows of equal length (rather than full windows and a
    mostly-repeated tail), overlapping by at least `spec.overlap` tokens.
    """
    size = spec.content_tokens
    if n_tokens <= size:
        return [Span(0, n_tokens, 0, n_tokens)]
    count = math.ceil((n_tokens - spec.overlap) / spec.stride)
    length = math.ceil((n_tokens + (count - 1) * spec.overlap) / count)
    while True:  # ends at length == size at the latest, where the largest step is <= stride
        starts = [k * (n_tokens - length) // (count - 1) for k in range(count)]
        if all(b - a <= length - spec.overlap for a, b in zip(starts, starts[1:])):
            break
        length += 1
    stops = [start + length for start in starts]
    # Boundary between neighbours: the middle of their shared tokens.
    bounds = [0] + [(starts[k + 1] + stops[k]) // 2 for k in range(count - 1)] + [n_tokens]
    return [Span(starts[k], stops[k], bounds[k], bounds[k + 1]) for k in range(count)]


def make_windows(token_ids: Sequence[Sequence[int]], spec: WindowSpec, special: SpecialIds) -> list[Window]:
    """Windows for every report, in report order; an empty report gets one window pooling its [CLS]."""
    windows: list[Window] = []
    for report, ids in enumerate(token_ids):
        if not ids:
            windows.append(Window(report, (special.cls, special.sep), 0, 1))
            continue
        for span in window_spans(len(ids), spec):
            body = tuple(ids[span.start : span.stop])
            # +1 for [CLS] in front of the content.
            windows.append(
                Window(
                    report,
                    (special.cls, *body, special.sep),
                    span.own_start - span.start + 1,
                    span.own_stop - span.start + 1,
                )
            )
    return windows


def batch_windows(windows: Sequence[Window], n_reports: int, pad_id: int) -> WindowBatch:
    """Pad windows to the longest one among them (dynamic padding)."""
    width = max((len(w.ids) for w in windows), default=SPECIAL_TOKENS_PER_WINDOW)
    count = len(windows)
    input_ids = np.full((count, width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((count, width), dtype=np.int64)
    pool_mask = np.zeros((count, width), dtype=np.int64)
    report_index = np.empty(count, dtype=np.int64)
    for row, window in enumerate(windows):
        input_ids[row, : len(window.ids)] = window.ids
        attention_mask[row, : len(window.ids)] = 1
        pool_mask[row, window.own_start : window.own_stop] = 1
        report_index[row] = window.report
    return WindowBatch(input_ids, attention_mask, pool_mask, report_index, n_reports)


def plan_chunks(windows: Sequence[Window], max_windows: int, max_cells: int) -> list[list[int]]:
    """Group window indices by length so that padding is small.

    Each chunk has at most `max_windows` windows and at most `max_cells` padded tokens
    (windows x longest window), which bounds memory and keeps long and short windows apart.
    """
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
    chunks: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = len(windows[index].ids)
        if current and (len(current) >= max_windows or (len(current) + 1) * width > max_cells):
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


def pool_windows(logits: np.ndarray, lse: np.ndarray, report_index: np.ndarray, n_reports: int) -> np.ndarray:
    """Report logits [n_reports, labels] from window logits and attention log-sum-exps [windows, labels]."""
    logits = np.asarray(logits, dtype=np.float64)
    lse = np.asarray(lse, dtype=np.float64)
    labels = logits.shape[1]
    peak = np.full((n_reports, labels), -np.inf)
    np.maximum.at(peak, report_index, lse)
    weight = np.exp(lse - peak[report_index])
    numerator = np.zeros((n_reports, labels))
    denominator = np.zeros((n_reports, labels))
    np.add.at(numerator, report_index, weight * logits)
    np.add.at(denominator, report_index, weight)
    return numerator / denominator


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def apply_thresholds(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Labels (int8 0/1) per report: probability >= the label's threshold; any category implies abnormal.

    Column 0 is `abnormal` and columns 1.. are the categories (daemon.labels.LABEL_KEYS order).
    """
    probabilities = np.asarray(probabilities)
    limits = np.asarray(thresholds, dtype=np.float64)
    if probabilities.shape[-1] != limits.shape[0]:
        raise ValueError(f"{probabilities.shape[-1]} probabilities but {limits.shape[0]} thresholds")
    labels = (probabilities >= limits).astype(np.int8)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels[:, 0] = np.maximum(labels[:, 0], labels[:, 1:].max(axis=1))
    return labels


class ReportTokenizer:
    """The encoder's WordPiece tokenizer, without truncation or padding (windows do that)."""

    def __init__(self, tokenizer_json: Path) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        ids = {name: tokenizer.token_to_id(name) for name in (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN)}
        missing = [name for name, value in ids.items() if value is None]
        if missing:
            raise ValueError(f"{tokenizer_json}: tokenizer has no {missing[0]} token")
        self.special = SpecialIds(cls=ids[CLS_TOKEN], sep=ids[SEP_TOKEN], pad=ids[PAD_TOKEN])

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def windows(self, texts: Sequence[str], spec: WindowSpec) -> list[Window]:
        return make_windows(self.encode(texts), spec, self.special)

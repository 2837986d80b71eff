"""The exported model run with ONNX Runtime: texts -> probabilities and labels.

Used inside the Triton python-backend model and by LocalClassifier, so both serve exactly the same
computation from the same files (a version folder of triton_models/<model>/).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from daemon.inference.metadata import ONNX_INPUTS, ONNX_OUTPUTS, TOKENIZER_FILE, ModelMetadata
from daemon.inference.windows import (
    ReportTokenizer,
    Window,
    apply_thresholds,
    batch_windows,
    plan_chunks,
    pool_windows,
    sigmoid,
)

log = logging.getLogger("neurolabel.inference.runtime")

CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class RuntimeOptions:
    variant: str = "cpu"  # key of metadata.onnx_files
    providers: tuple[str, ...] = (CPU_PROVIDER,)
    device_id: int = 0
    intra_op_threads: int = 0  # 0: onnxruntime's default (all cores)
    # Windows per onnxruntime call. The CPU graph is dynamically quantised (activation scale per call),
    # so it runs one window per call whatever this says: a report's result must not depend on its
    # batch-mates. The GPU graph (fp16) runs batches of up to this many windows.
    max_windows_per_run: int = 64
    max_cells_per_run: int = 8192  # windows x padded tokens per onnxruntime call
    allow_spinning: bool = True  # intra-op threads spin while waiting (off when instances share few cores)


# Variants whose graph quantises activations per call (daemon/training/export.py quantize_cpu).
PER_WINDOW_VARIANTS = frozenset({"cpu"})


def session_options(intra_op_threads: int, allow_spinning: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxReportModel:
    def __init__(self, version_dir: Path, options: RuntimeOptions = RuntimeOptions(), graph: bytes | None = None) -> None:
        """`graph`: a serialized ONNX graph to run instead of the version folder's (e.g. a pruned variant)."""
        self.metadata = ModelMetadata.load(version_dir)
        if options.variant not in self.metadata.onnx_files:
            raise ValueError(f"{version_dir}: no ONNX file for variant {options.variant!r}")
        self.options = options
        self.tokenizer = ReportTokenizer(version_dir / TOKENIZER_FILE)
        providers: list[str | tuple[str, dict[str, str]]] = [
            (name, {"device_id": str(options.device_id)}) if name != CPU_PROVIDER else name
            for name in options.providers
        ]
        self.session = ort.InferenceSession(
            graph if graph is not None else str(version_dir / self.metadata.onnx_files[options.variant]),
            sess_options=session_options(options.intra_op_threads, options.allow_spinning),
            providers=providers,
        )
        self._thresholds = np.asarray(self.metadata.threshold_list)
        self._per_window = options.variant in PER_WINDOW_VARIANTS

    @property
    def model(self) -> str:
        return f"{self.metadata.name}:{self.metadata.version}"

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Report logits [len(texts), labels]."""
        started = time.perf_counter()
        windows = self.tokenizer.windows(texts, self.metadata.window)
        window_logits, window_lse, runs = self._run(windows, len(texts))
        report_index = np.asarray([w.report for w in windows], dtype=np.int64)
        result = pool_windows(window_logits, window_lse, report_index, len(texts))
        log.debug(
            "classified reports=%d windows=%d runs=%d ms=%.1f",
            len(texts), len(windows), runs, 1000 * (time.perf_counter() - started),
        )
        return result

    def _run(self, windows: Sequence[Window], n_reports: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Windows of similar length padded into batches; one window per call (no padding, each window
        quantised on its own scale) for the variants that quantise activations per call."""
        n_labels = len(self.metadata.labels)
        window_logits = np.empty((len(windows), n_labels), dtype=np.float32)
        window_lse = np.empty((len(windows), n_labels), dtype=np.float32)
        max_windows = 1 if self._per_window else self.options.max_windows_per_run
        chunks = plan_chunks(windows, max_windows, self.options.max_cells_per_run)
        for chunk in chunks:
            batch = batch_windows([windows[i] for i in chunk], n_reports, self.tokenizer.special.pad)
            feeds = dict(zip(ONNX_INPUTS, (batch.input_ids, batch.attention_mask, batch.pool_mask)))
            logits, lse = self.session.run(list(ONNX_OUTPUTS), feeds)
            window_logits[chunk] = logits
            window_lse[chunk] = lse
        return window_logits, window_lse, len(chunks)

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities float32 [n, labels], labels int8 [n, labels]) with the model's thresholds."""
        if not texts:
            n = len(self.metadata.labels)
            return np.zeros((0, n), dtype=np.float32), np.zeros((0, n), dtype=np.int8)
        probabilities = self.probabilities(texts)
        return probabilities, apply_thresholds(probabilities, self._thresholds)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The served probabilities: the transformer's, blended with the rule-based labeller's by rules_weight."""
        probabilities = sigmoid(self.logits(texts))
        weight = self.metadata.rules_weight
        if weight:
            from daemon.evaluation.baseline import score_report

            rules = np.asarray([[scores[key] for key in self.metadata.labels] for scores in map(score_report, texts)])
            probabilities = (1.0 - weight) * probabilities + weight * rules
        return probabilities.astype(np.float32)

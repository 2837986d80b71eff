"""LocalClassifier: the Triton model's computation in-process (`neurolabel classify --local`, evaluation, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from daemon.inference.metadata import latest_version_dir, model_info
from daemon.inference.prediction import ModelInfo, Prediction, predictions_from_arrays
from daemon.inference.runtime import OnnxReportModel, RuntimeOptions


class LocalClassifier:
    """Reads triton_models/<model>/<version>/ and runs it with ONNX Runtime on this machine's CPU."""

    def __init__(
        self,
        model_repository: Path,
        model_name: str = "neurolabel_report",
        options: RuntimeOptions = RuntimeOptions(),
    ) -> None:
        self._model = OnnxReportModel(latest_version_dir(model_repository / model_name), options)
        self._lock = asyncio.Lock()

    def classify_sync(self, texts: Sequence[str]) -> list[Prediction]:
        probabilities, labels = self._model.predict(list(texts))
        return predictions_from_arrays(probabilities, labels, self._model.model, self._model.metadata.labels)

    def probabilities_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [len(texts), labels] in label order."""
        return self._model.predict(list(texts))[0]

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        # One inference at a time: onnxruntime already uses every core for one call.
        async with self._lock:
            return await asyncio.to_thread(self.classify_sync, texts)

    async def is_ready(self) -> bool:
        return True

    async def model_info(self) -> ModelInfo:
        return model_info(self._model.metadata)

    async def close(self) -> None:
        return None

"""What a classifier returns, and the error that means "try again later"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from daemon.labels import LABEL_KEYS


class InferenceUnavailable(Exception):
    """The model cannot answer now (server down, not ready, model not loaded): keep the work pending."""


class InferenceFailed(Exception):
    """The server answered with an error that retrying the same request will not fix."""


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]
    labels: dict[str, int]
    model: str  # "name:version"

    def to_json(self, report_id: str) -> dict[str, object]:
        """One `neurolabel classify` output line."""
        return {
            "id": report_id,
            "probabilities": dict(self.probabilities),
            "labels": dict(self.labels),
            "model": self.model,
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    release: str = ""
    training_data_sha256: str = ""

    @property
    def model(self) -> str:
        return f"{self.name}:{self.version}"


class Classifier(Protocol):
    """Implemented by TritonClassifier and LocalClassifier."""

    async def classify(self, texts: Sequence[str]) -> list[Prediction]: ...

    async def is_ready(self) -> bool: ...

    async def model_info(self) -> ModelInfo: ...


def predictions_from_arrays(
    probabilities: np.ndarray, labels: np.ndarray, model: str, keys: Sequence[str] = LABEL_KEYS
) -> list[Prediction]:
    """Rows of [reports, labels] arrays -> Predictions keyed by label name."""
    return [
        Prediction(
            probabilities={key: round(float(p), 6) for key, p in zip(keys, prob_row)},
            labels={key: int(v) for key, v in zip(keys, label_row)},
            model=model,
        )
        for prob_row, label_row in zip(probabilities, labels)
    ]


def thresholds_in_order(thresholds: Mapping[str, float], keys: Sequence[str] = LABEL_KEYS) -> list[float]:
    missing = [key for key in keys if key not in thresholds]
    if missing:
        raise ValueError(f"no threshold for label {missing[0]!r}")
    return [float(thresholds[key]) for key in keys]

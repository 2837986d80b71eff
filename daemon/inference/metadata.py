"""The model's metadata: one JSON file next to the ONNX files, mirrored into Triton's config.pbtxt `parameters`.

Label order, thresholds, window settings, name, version and training data digest travel with the model
so that serving, clients and the model card all read the same values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.inference.prediction import ModelInfo, thresholds_in_order
from daemon.inference.windows import WindowSpec
from daemon.labels import LABEL_KEYS

METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.json"
ONNX_INPUTS = ("input_ids", "attention_mask", "pool_mask")
ONNX_OUTPUTS = ("logits", "lse")
# Keys of config.pbtxt `parameters` that clients read with get_model_config.
PARAM_LABELS = "labels"
PARAM_THRESHOLDS = "thresholds"
PARAM_VERSION = "version"
PARAM_RELEASE = "release"
PARAM_DATA_DIGEST = "training_data_sha256"
PARAM_WINDOW = "window"


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    release: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    threshold_rule: str
    window: WindowSpec
    onnx_files: dict[str, str]  # variant ("cpu", "gpu") -> file name in the version folder
    encoder: str
    training: dict[str, Any] = field(default_factory=dict)
    # Weight of the rule-based labeller's scores (daemon.evaluation.baseline) in the served probability:
    # p = (1 - w) * transformer + w * rules. 0 serves the transformer alone.
    rules_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rules_weight <= 1.0:
            raise ValueError(f"rules_weight must be within 0..1, got {self.rules_weight}")
        if tuple(self.labels) != LABEL_KEYS:
            raise ValueError(f"model labels {list(self.labels)} differ from {list(LABEL_KEYS)}")
        thresholds_in_order(self.thresholds, self.labels)

    @property
    def threshold_list(self) -> list[float]:
        return thresholds_in_order(self.thresholds, self.labels)

    @property
    def training_data_sha256(self) -> str:
        return str(self.training.get("data_sha256", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "labels": list(self.labels),
            "thresholds": {key: self.thresholds[key] for key in self.labels},
            "threshold_rule": self.threshold_rule,
            "window": {"max_tokens": self.window.max_tokens, "overlap": self.window.overlap},
            "onnx_files": dict(self.onnx_files),
            "encoder": self.encoder,
            "rules_weight": self.rules_weight,
            "training": dict(self.training),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMetadata:
        window = data["window"]
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            release=str(data["release"]),
            labels=tuple(data["labels"]),
            thresholds={str(k): float(v) for k, v in data["thresholds"].items()},
            threshold_rule=str(data["threshold_rule"]),
            window=WindowSpec(max_tokens=int(window["max_tokens"]), overlap=int(window["overlap"])),
            onnx_files={str(k): str(v) for k, v in data["onnx_files"].items()},
            encoder=str(data["encoder"]),
            rules_weight=float(data.get("rules_weight", 0.0)),
            training=dict(data.get("training", {})),
        )

    @classmethod
    def load(cls, version_dir: Path) -> ModelMetadata:
        path = version_dir / METADATA_FILE
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid model metadata file: {exc}") from exc

    def save(self, version_dir: Path) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"
        (version_dir / METADATA_FILE).write_text(text, encoding="utf-8")

    def parameters(self) -> dict[str, str]:
        """The config.pbtxt `parameters` (string values) that clients read."""
        return {
            PARAM_LABELS: ",".join(self.labels),
            PARAM_THRESHOLDS: ",".join(f"{t:.6g}" for t in self.threshold_list),
            PARAM_VERSION: self.version,
            PARAM_RELEASE: self.release,
            PARAM_DATA_DIGEST: self.training_data_sha256,
            PARAM_WINDOW: f"{self.window.max_tokens}/{self.window.overlap}",
        }


def model_info_from_parameters(name: str, version: str, parameters: Mapping[str, str]) -> ModelInfo:
    """ModelInfo from config.pbtxt parameters (as read by a Triton client); ValueError names what is wrong."""
    missing = [key for key in (PARAM_LABELS, PARAM_THRESHOLDS) if key not in parameters]
    if missing:
        raise ValueError(f"model {name!r} config has no {missing[0]!r} parameter")
    labels = tuple(parameters[PARAM_LABELS].split(","))
    values = [float(v) for v in parameters[PARAM_THRESHOLDS].split(",")]
    if len(values) != len(labels):
        raise ValueError(f"model {name!r}: {len(labels)} labels but {len(values)} thresholds")
    return ModelInfo(
        name=name,
        version=parameters.get(PARAM_VERSION, version) or version,
        labels=labels,
        thresholds=dict(zip(labels, values)),
        release=parameters.get(PARAM_RELEASE, ""),
        training_data_sha256=parameters.get(PARAM_DATA_DIGEST, ""),
    )


def model_info(metadata: ModelMetadata) -> ModelInfo:
    return model_info_from_parameters(metadata.name, metadata.version, metadata.parameters())


def latest_version_dir(model_dir: Path) -> Path:
    """The highest numbered version folder of a Triton model directory."""
    if not model_dir.is_dir():
        raise ValueError(f"{model_dir}: no such model directory")
    versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise ValueError(f"{model_dir}: no numbered version folder")
    return versions[-1][1]

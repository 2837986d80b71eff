"""The shipped Triton model repository: metadata, generated configs, sizes, and the model run in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from daemon.inference.local import LocalClassifier
from daemon.inference.metadata import ModelMetadata, latest_version_dir, model_info, model_info_from_parameters
from daemon.inference.triton_config import CPU_SETTINGS, GPU_CONFIG_NAME, GPU_SETTINGS, render_config
from daemon.labels import LABEL_KEYS

REPOSITORY = Path(__file__).resolve().parents[2] / "triton_models"
MODEL_DIR = REPOSITORY / "neurolabel_report"
MAX_COMMITTED_BYTES = 80 * 1024 * 1024


@pytest.fixture(scope="module")
def metadata() -> ModelMetadata:
    return ModelMetadata.load(latest_version_dir(MODEL_DIR))


@pytest.fixture(scope="module")
def classifier() -> LocalClassifier:
    return LocalClassifier(REPOSITORY, "neurolabel_report")


def test_metadata_round_trips_and_names_every_label(metadata: ModelMetadata, tmp_path: Path) -> None:
    assert metadata.labels == LABEL_KEYS
    assert all(0.0 < metadata.thresholds[key] < 1.0 for key in LABEL_KEYS)
    assert len(metadata.training_data_sha256) == 64
    metadata.save(tmp_path)
    assert ModelMetadata.load(tmp_path) == metadata


def test_every_version_holds_the_packaged_python_backend_model() -> None:
    """Triton loads <version>/model.py; `neurolabel train` copies it from the package, so the shipped copy
    must be that file (it cannot drift from what a hospital's own training writes)."""
    packaged = Path(__file__).resolve().parents[2] / "daemon" / "inference" / "triton_backend" / "model.py"
    versions = [path for path in MODEL_DIR.iterdir() if path.is_dir() and path.name.isdigit()]
    assert versions
    for version_dir in versions:
        assert (version_dir / "model.py").read_bytes() == packaged.read_bytes()


def test_configs_are_generated_from_the_metadata(metadata: ModelMetadata) -> None:
    """config.pbtxt (CPU) and configs/gpu.pbtxt carry the thresholds clients read; they must not drift."""
    assert (MODEL_DIR / "config.pbtxt").read_text() == render_config(metadata, CPU_SETTINGS)
    assert (MODEL_DIR / "configs" / f"{GPU_CONFIG_NAME}.pbtxt").read_text() == render_config(metadata, GPU_SETTINGS)


def test_model_info_from_config_parameters(metadata: ModelMetadata) -> None:
    info = model_info_from_parameters("neurolabel_report", "1", metadata.parameters())
    assert info == model_info(metadata)
    assert info.model == f"neurolabel_report:{metadata.version}"
    assert info.labels == LABEL_KEYS
    assert info.thresholds == pytest.approx(metadata.thresholds, abs=1e-6)
    with pytest.raises(ValueError, match="no 'thresholds' parameter"):
        model_info_from_parameters("m", "1", {"labels": "a"})


def test_model_files_exist_and_stay_under_the_size_budget(metadata: ModelMetadata) -> None:
    version_dir = latest_version_dir(MODEL_DIR)
    files = [version_dir / name for name in metadata.onnx_files.values()] + [version_dir / "tokenizer.json"]
    assert all(path.is_file() for path in files)
    total = sum(path.stat().st_size for path in REPOSITORY.rglob("*") if path.is_file())
    assert total < MAX_COMMITTED_BYTES


def test_local_classifier_labels_reports(classifier: LocalClassifier, metadata: ModelMetadata) -> None:
    texts = [
        "MRI head. Normal appearances of the brain. No acute infarct, mass or haemorrhage.",
        "There is restricted diffusion in the left MCA territory in keeping with an acute infarct.",
        "",
        "Large enhancing right frontal mass with surrounding oedema and midline shift, likely glioblastoma. " * 40,
    ]
    predictions = classifier.classify_sync(texts)
    assert len(predictions) == 4
    for prediction in predictions:
        assert list(prediction.probabilities) == list(LABEL_KEYS)
        assert all(0.0 <= p <= 1.0 for p in prediction.probabilities.values())
        assert prediction.model == f"neurolabel_report:{metadata.version}"
        for key in LABEL_KEYS[1:]:
            assert prediction.labels[key] == int(prediction.probabilities[key] >= metadata.thresholds[key])
        if any(prediction.labels[key] for key in LABEL_KEYS[1:]):
            assert prediction.labels["abnormal"] == 1
    normal, stroke, _, mass = predictions
    assert normal.labels["abnormal"] == 0
    assert stroke.labels["acute_stroke"] == 1
    assert mass.labels["mass"] == 1


def test_local_classifier_is_deterministic_and_batch_independent(classifier: LocalClassifier) -> None:
    texts = [
        "Old left MCA infarct with encephalomalacia.",
        "Mild generalised atrophy. " * 150,  # several windows
        "Normal.",
        "Large enhancing right frontal mass with surrounding oedema. " * 3,
    ]
    together = classifier.probabilities_sync(texts)
    assert np.array_equal(together, classifier.probabilities_sync(texts))
    # The int8 graph quantises activations per onnxruntime call and runs one window per call, so a
    # report's probabilities are the same bit for bit whatever it is batched with, and in any order.
    alone = np.vstack([classifier.probabilities_sync([text]) for text in texts])
    assert np.array_equal(together, alone)
    shuffled = classifier.probabilities_sync(texts[::-1] + texts[:1])
    assert np.array_equal(shuffled[:-1][::-1], together)
    assert np.array_equal(shuffled[-1], together[0])


def test_cpu_settings_run_two_single_threaded_instances_one_window_per_call() -> None:
    from daemon.inference.runtime import PER_WINDOW_VARIANTS

    assert CPU_SETTINGS.variant in PER_WINDOW_VARIANTS and GPU_SETTINGS.variant not in PER_WINDOW_VARIANTS
    assert (CPU_SETTINGS.instances, CPU_SETTINGS.intra_op_threads, CPU_SETTINGS.allow_spinning) == (2, 1, False)
    text = (MODEL_DIR / "config.pbtxt").read_text()
    assert "instance_group [ { count: 2 kind: KIND_CPU } ]" in text
    assert 'key: "allow_spinning" value: { string_value: "0" }' in text


def test_local_classifier_async_interface(classifier: LocalClassifier) -> None:
    async def main() -> None:
        assert await classifier.is_ready()
        info = await classifier.model_info()
        predictions = await classifier.classify(["Normal MRI brain."])
        assert predictions[0].model == info.model
        assert await classifier.classify([]) == []

    asyncio.run(main())

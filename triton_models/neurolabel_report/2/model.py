"""Triton python-backend model: TEXT (bytes) -> PROBABILITIES (fp32 [8]) and LABELS (int8 [8]).

Tokenisation, windows, onnxruntime and window pooling are daemon.inference.runtime, the code that
LocalClassifier runs too. The Python environment that runs this stub must have the neurolabel package
installed (runtime dependencies only: numpy<2, tokenizers, onnxruntime or onnxruntime-gpu); the
`python_path` parameter adds a folder holding the `daemon` package instead.
Report text is never logged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend stub


def _parameters(model_config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def _decode(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model_config = json.loads(args["model_config"])
        parameters = _parameters(model_config)
        if parameters.get("python_path"):
            sys.path.insert(0, parameters["python_path"])
        from daemon.inference.runtime import OnnxReportModel, RuntimeOptions
        from daemon.inference.triton_config import INPUT_TEXT, OUTPUT_LABELS, OUTPUT_PROBABILITIES

        self.names = (INPUT_TEXT, OUTPUT_PROBABILITIES, OUTPUT_LABELS)

        gpu = args.get("model_instance_kind") == "GPU"
        providers = tuple(
            name.strip()
            for name in parameters.get("execution_providers", "CPUExecutionProvider").split(",")
            if name.strip()
        )
        options = RuntimeOptions(
            variant=parameters.get("variant", "gpu" if gpu else "cpu"),
            providers=providers,
            device_id=int(args.get("model_instance_device_id", 0) or 0),
            intra_op_threads=int(parameters.get("intra_op_threads", "0")),
            max_windows_per_run=int(parameters.get("max_windows_per_run", "64")),
            max_cells_per_run=int(parameters.get("max_cells_per_run", "8192")),
            allow_spinning=parameters.get("allow_spinning", "1") != "0",
        )
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.model = OnnxReportModel(version_dir, options)
        self.logger = pb_utils.Logger
        self.logger.log_info(
            f"neurolabel_report {self.model.model} loaded: variant={options.variant} "
            f"providers={list(self.model.session.get_providers())}"
        )

    def execute(self, requests: list) -> list:
        input_text, output_probabilities, output_labels = self.names
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, input_text).as_numpy().reshape(-1)
            texts.extend(_decode(value) for value in values)
            counts.append(len(values))
        try:
            probabilities, labels = self.model.predict(texts)
        except Exception as exc:  # one bad batch must answer every request, not kill the stub
            error = pb_utils.TritonError(f"classification failed: {type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for count in counts:
            stop = start + count
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(output_probabilities, np.ascontiguousarray(probabilities[start:stop])),
                        pb_utils.Tensor(output_labels, np.ascontiguousarray(labels[start:stop])),
                    ]
                )
            )
            start = stop
        return responses

    def finalize(self) -> None:
        self.model = None

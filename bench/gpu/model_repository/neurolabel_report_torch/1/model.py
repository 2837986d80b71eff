"""Triton python-backend model: the shipped classifier in PyTorch fp16 on the GPU.

Tokenisation, windows, window pooling and thresholds are daemon.inference (the code the CPU model
runs); only the encoder + attention head run in torch instead of onnxruntime. Weights: the torch
state dict of the shipped model (`neurolabel train` writes it), converted to fp16, in `weights_dir`
with the encoder's config.json. The encoder is bert.py (torch only). Report text is never logged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        if parameters.get("python_path"):
            sys.path.insert(0, parameters["python_path"])
        import torch
        from safetensors.torch import load_file

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bert

        from daemon.inference.metadata import TOKENIZER_FILE, ModelMetadata
        from daemon.inference.windows import ReportTokenizer

        self.torch = torch
        version_dir = Path(parameters["version_dir"])
        weights_dir = Path(parameters["weights_dir"])
        self.metadata = ModelMetadata.load(version_dir)
        self.tokenizer = ReportTokenizer(version_dir / TOKENIZER_FILE)
        self.thresholds = np.asarray(self.metadata.threshold_list, dtype=np.float32)
        self.max_windows = int(parameters.get("max_windows_per_run", "512"))
        self.max_cells = int(parameters.get("max_cells_per_run", "131072"))
        on_gpu = args.get("model_instance_kind") == "GPU"
        device_id = int(args.get("model_instance_device_id", 0) or 0)
        self.device = torch.device(f"cuda:{device_id}" if on_gpu else "cpu")
        encoder_config = json.loads((weights_dir / "config.json").read_text())
        state = {k: v.float() for k, v in load_file(weights_dir / "model.safetensors").items()}
        model = bert.load(encoder_config, state, len(self.metadata.labels))
        self.model = (model.half() if on_gpu else model).to(self.device).eval()
        pb_utils.Logger.log_info(f"neurolabel_report_torch {self.metadata.name}:{self.metadata.version} on {self.device}")

    def execute(self, requests: list) -> list:
        from daemon.inference.windows import apply_thresholds, batch_windows, plan_chunks, pool_windows, sigmoid

        torch = self.torch
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in values)
            counts.append(len(values))
        windows = self.tokenizer.windows(texts, self.metadata.window)
        n_labels = len(self.metadata.labels)
        window_logits = np.empty((len(windows), n_labels), dtype=np.float32)
        window_lse = np.empty((len(windows), n_labels), dtype=np.float32)
        with torch.inference_mode():
            for chunk in plan_chunks(windows, self.max_windows, self.max_cells):
                batch = batch_windows([windows[i] for i in chunk], len(texts), self.tokenizer.special.pad)
                tensors = [torch.from_numpy(a).to(self.device, non_blocking=True)
                           for a in (batch.input_ids, batch.attention_mask, batch.pool_mask)]
                logits, lse = self.model(*tensors)
                window_logits[chunk] = logits.float().cpu().numpy()
                window_lse[chunk] = lse.float().cpu().numpy()
        report_index = np.asarray([w.report for w in windows], dtype=np.int64)
        probabilities = sigmoid(pool_windows(window_logits, window_lse, report_index, len(texts))).astype(np.float32)
        labels = apply_thresholds(probabilities, self.thresholds)
        responses = []
        start = 0
        for count in counts:
            stop = start + count
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("PROBABILITIES", probabilities[start:stop]),
                pb_utils.Tensor("LABELS", labels[start:stop].astype(np.int8)),
            ]))
            start = stop
        return responses

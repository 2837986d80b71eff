"""TritonClassifier: report texts -> Predictions through a Triton server (gRPC, asyncio).

The model tokenises inside Triton, so clients send text. Label order, thresholds and version come
from the model's config.pbtxt `parameters` (get_model_config). When Triton cannot answer (down,
starting, model not loaded, deadline passed) calls raise InferenceUnavailable, so callers keep the
work pending and retry later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from daemon.inference.metadata import model_info_from_parameters
from daemon.inference.prediction import InferenceFailed, InferenceUnavailable, ModelInfo, Prediction, predictions_from_arrays
from daemon.inference.triton_config import INPUT_TEXT, OUTPUT_LABELS, OUTPUT_PROBABILITIES

log = logging.getLogger("neurolabel.inference.triton")

# gRPC statuses that mean "not now" rather than "this request is wrong".
TRANSIENT_STATUSES = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.DEADLINE_EXCEEDED",
        "StatusCode.NOT_FOUND",  # model not (yet) loaded
        "StatusCode.RESOURCE_EXHAUSTED",
        "StatusCode.CANCELLED",
        "StatusCode.ABORTED",
        "StatusCode.UNKNOWN",
    }
)


def _is_transient(exc: InferenceServerException) -> bool:
    status = exc.status() or ""
    return status in TRANSIENT_STATUSES or "not ready" in str(exc.message()).lower()


class TritonClassifier:
    def __init__(
        self,
        url: str,
        model: str = "neurolabel_report",
        *,
        timeout_seconds: float = 30.0,
        max_in_flight: int = 8,
        batch_size: int = 16,
        client_options: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # client_options (TLS) and headers (a token) for a remote server: daemon/inference/triton_remote.py
        self._url = url
        self._model = model
        self._timeout = timeout_seconds
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._batch_size = batch_size
        self._client = grpcclient.InferenceServerClient(url, **dict(client_options or {}))
        self._headers = dict(headers or {}) or None
        self._info: ModelInfo | None = None
        self._max_batch_size = 0

    async def __aenter__(self) -> TritonClassifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self) -> bool:
        try:
            return bool(
                await self._client.is_server_ready(headers=self._headers, client_timeout=self._timeout)
                and await self._client.is_model_ready(self._model, headers=self._headers, client_timeout=self._timeout)
            )
        except InferenceServerException:
            return False

    async def model_info(self) -> ModelInfo:
        """Name, version, labels and thresholds of the served model (read once, then cached)."""
        if self._info is None:
            try:
                response = await self._client.get_model_config(
                    self._model, headers=self._headers, as_json=True, client_timeout=self._timeout
                )
                metadata = await self._client.get_model_metadata(
                    self._model, headers=self._headers, as_json=True, client_timeout=self._timeout
                )
            except InferenceServerException as exc:
                raise self._error(exc, "reading the model configuration") from exc
            config = response["config"]
            parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
            versions = metadata.get("versions") or [""]
            try:
                self._info = model_info_from_parameters(self._model, max(versions, key=_version_key), parameters)
            except ValueError as exc:
                raise InferenceFailed(str(exc)) from exc
            self._max_batch_size = int(config.get("max_batch_size", 0) or 0)
        return self._info

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text, in order; requests of `batch_size` texts run concurrently."""
        if not texts:
            return []
        info = await self.model_info()
        size = min(self._batch_size, self._max_batch_size) if self._max_batch_size else self._batch_size
        started = time.perf_counter()
        chunks = [list(texts[i : i + size]) for i in range(0, len(texts), size)]
        results = await asyncio.gather(*(self._infer(chunk, info) for chunk in chunks))
        log.debug("triton classified reports=%d requests=%d ms=%.1f", len(texts), len(chunks), 1000 * (time.perf_counter() - started))
        return [prediction for chunk in results for prediction in chunk]

    async def _infer(self, texts: list[str], info: ModelInfo) -> list[Prediction]:
        data = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        tensor = grpcclient.InferInput(INPUT_TEXT, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput(OUTPUT_PROBABILITIES), grpcclient.InferRequestedOutput(OUTPUT_LABELS)]
        async with self._in_flight:
            try:
                result = await self._client.infer(
                    self._model, [tensor], outputs=outputs, headers=self._headers, client_timeout=self._timeout
                )
            except InferenceServerException as exc:
                raise self._error(exc, f"classifying {len(texts)} report(s)") from exc
        probabilities = result.as_numpy(OUTPUT_PROBABILITIES)
        labels = result.as_numpy(OUTPUT_LABELS)
        if probabilities is None or labels is None or len(probabilities) != len(texts):
            raise InferenceFailed(f"model {info.model} returned a malformed response")
        return predictions_from_arrays(probabilities, labels, info.model, info.labels)

    def _error(self, exc: InferenceServerException, doing: str) -> Exception:
        message = f"Triton at {self._url}, model {self._model}: {doing} failed: {exc.status() or ''} {exc.message()}"
        if _is_transient(exc):
            self._info = None  # the model may come back as another version
            return InferenceUnavailable(message)
        return InferenceFailed(message)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)

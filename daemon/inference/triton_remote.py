"""Remote Triton servers: TLS, an authentication header, and load spread over several servers.

`connect_classifier(config)` is how the users of Triton (the classify worker, `neurolabel classify`,
`neurolabel relabel`) get their classifier: a TritonClassifier for the bundled server or a single
`[triton] url`, a SpreadClassifier when `[triton] extra_urls` names more servers. Both take TLS
settings and the header from `[triton]` (see config.toml).

SpreadClassifier splits each batch over the servers in turn (round robin, the starting server rotating
from call to call). A server that cannot answer (InferenceUnavailable: down, model not loaded, deadline
passed) is left out for UNHEALTHY_SECONDS and its part goes to the next server; only when none can
answer does the call raise InferenceUnavailable, which keeps the work pending.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.config import Config, ConfigError, TritonConfig
from daemon.inference.prediction import InferenceUnavailable, ModelInfo, Prediction

if TYPE_CHECKING:
    from daemon.inference.triton_client import TritonClassifier

log = logging.getLogger("neurolabel.inference.triton")

# How long a server that failed is left out before it is tried again.
UNHEALTHY_SECONDS = 5.0
# Smallest share of a batch sent to one server (TritonClassifier's own request size).
DEFAULT_PART_SIZE = 16


@dataclass(frozen=True)
class TritonAccess:
    """How to reach Triton: keyword arguments for tritonclient's InferenceServerClient, headers for every call."""

    client_options: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the token
        return f"TritonAccess(client_options={dict(self.client_options)!r}, headers={sorted(self.headers)!r})"


def access_from_config(settings: TritonConfig) -> TritonAccess:
    """The TLS options and header `[triton]` asks for; ConfigError naming the key if a file cannot be read."""
    options: dict[str, Any] = {}
    if settings.tls:
        options["ssl"] = True
        files = (("tls_ca", "root_certificates"), ("tls_cert", "certificate_chain"), ("tls_key", "private_key"))
        for key, option in files:
            path = getattr(settings, key)
            if path:
                _check_readable(f"triton.{key}", path)
                options[option] = path  # tritonclient reads the PEM files itself
    headers: dict[str, str] = {}
    if settings.auth_header:
        headers[settings.auth_header] = read_token(settings.auth_token_file)
    return TritonAccess(options, headers)


def read_token(path: str) -> str:
    """The first line of `[triton] auth_token_file`, stripped."""
    _check_readable("triton.auth_token_file", path)
    with open(path, encoding="utf-8") as handle:
        token = handle.readline().strip()
    if not token:
        raise ConfigError(f"triton.auth_token_file: {path} is empty")
    return token


def _check_readable(key: str, path: str) -> None:
    if not os.access(path, os.R_OK) or not os.path.isfile(path):
        raise ConfigError(f"{key}: cannot read {path}")


def connect_classifier(
    config: Config, model: str | None = None, *, timeout_seconds: float | None = None
) -> TritonClassifier | SpreadClassifier:
    """A classifier for the configured Triton server(s); close it (or use `async with`) when done."""
    from daemon.inference.triton_client import TritonClassifier
    from daemon.inference.triton_server import grpc_url

    settings = config.triton
    access = access_from_config(settings)
    timeout = settings.request_timeout_seconds if timeout_seconds is None else timeout_seconds
    members = [
        (
            url,
            TritonClassifier(
                url,
                model or settings.model,
                timeout_seconds=timeout,
                client_options=access.client_options,
                headers=access.headers,
            ),
        )
        for url in settings.urls or (grpc_url(config),)
    ]
    if len(members) == 1:
        return members[0][1]
    return SpreadClassifier(members)


def readiness(config: Config, timeout: float = 2.0) -> tuple[bool, str]:
    """(up, detail) of the configured Triton server(s) and model, without raising: up while any one serves it."""
    from daemon.inference.component import model_readiness
    from daemon.inference.triton_server import grpc_url

    settings = config.triton
    try:
        access = access_from_config(settings)
    except ConfigError as exc:
        return False, str(exc)
    urls = settings.urls or (grpc_url(config),)
    results = [
        model_readiness(url, settings.model, timeout, client_options=access.client_options, headers=access.headers)
        for url in urls
    ]
    if len(results) == 1:
        return results[0]
    up = [url for url, (ready, _) in zip(urls, results) if ready]
    return bool(up), f"{len(up)} of {len(urls)} Triton servers ready; " + "; ".join(detail for _, detail in results)


class SpreadClassifier:
    """Several Triton servers serving the same model, used as one classifier (see the module docstring)."""

    def __init__(
        self,
        members: Sequence[tuple[str, Any]],
        *,
        part_size: int = DEFAULT_PART_SIZE,
        unhealthy_seconds: float = UNHEALTHY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not members:
            raise ValueError("a SpreadClassifier needs at least one server")
        self._urls = [url for url, _ in members]
        self._members = [member for _, member in members]
        self._part_size = part_size
        self._unhealthy_seconds = unhealthy_seconds
        self._clock = clock
        self._down_until = [0.0] * len(members)
        self._turn = 0

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self._urls)

    def healthy(self) -> tuple[str, ...]:
        now = self._clock()
        return tuple(url for url, until in zip(self._urls, self._down_until) if until <= now)

    async def __aenter__(self) -> SpreadClassifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(member.close() for member in self._members), return_exceptions=True)

    async def is_ready(self) -> bool:
        ready = await asyncio.gather(*(member.is_ready() for member in self._members))
        for index, up in enumerate(ready):
            if up:
                self._mark_up(index)
            else:
                self._mark_down(index, "not ready")
        return any(ready)

    async def model_info(self) -> ModelInfo:
        error: Exception | None = None
        for index in self._order():
            try:
                info = await self._members[index].model_info()
            except InferenceUnavailable as exc:
                self._mark_down(index, str(exc))
                error = exc
                continue
            self._mark_up(index)
            return info
        raise InferenceUnavailable(f"no Triton server answered: {error}")

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text, in order; the batch is split over the healthy servers."""
        if not texts:
            return []
        order = self._order()
        count = max(1, min(len(order), math.ceil(len(texts) / self._part_size)))
        bounds = [round(i * len(texts) / count) for i in range(count + 1)]
        parts = [list(texts[bounds[i] : bounds[i + 1]]) for i in range(count)]
        results = await asyncio.gather(*(self._classify_part(part, order, first) for first, part in enumerate(parts)))
        return [prediction for part in results for prediction in part]

    async def _classify_part(self, texts: list[str], order: list[int], first: int) -> list[Prediction]:
        error: Exception | None = None
        for step in range(len(order)):
            index = order[(first + step) % len(order)]
            if step and not self._is_up(index):
                continue  # found down by another part meanwhile
            try:
                predictions = await self._members[index].classify(texts)
            except InferenceUnavailable as exc:
                self._mark_down(index, str(exc))
                error = exc
                continue
            self._mark_up(index)
            return predictions
        raise InferenceUnavailable(f"no Triton server could classify {len(texts)} report(s): {error}")

    def _order(self) -> list[int]:
        """Healthy servers, starting one further on each call; every server if none is healthy."""
        now = self._clock()
        healthy = [i for i, until in enumerate(self._down_until) if until <= now] or list(range(len(self._members)))
        start = self._turn % len(healthy)
        self._turn += 1
        return healthy[start:] + healthy[:start]

    def _is_up(self, index: int) -> bool:
        return self._down_until[index] <= self._clock()

    def _mark_down(self, index: int, reason: str) -> None:
        if self._is_up(index):
            log.warning("Triton at %s left out for %.0f s: %s", self._urls[index], self._unhealthy_seconds, reason)
        self._down_until[index] = self._clock() + self._unhealthy_seconds

    def _mark_up(self, index: int) -> None:
        if self._down_until[index]:
            log.info("Triton at %s answers again", self._urls[index])
            self._down_until[index] = 0.0

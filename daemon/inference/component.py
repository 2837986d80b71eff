"""The inference component: the bundled Triton server (when `[triton] url` is empty) and its health."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.inference.triton_server import BundledTriton, grpc_url

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.triton")


class TritonComponent:
    """Starts the bundled server if configured; reports whether Triton and the model are ready."""

    name = "triton"

    def __init__(self, services: Services) -> None:
        self._config = services.config
        self._settings = services.config.triton
        self._ready_gauge = services.metrics.triton_ready
        self.url = grpc_url(services.config)
        self.bundled = (
            None if self._settings.url else BundledTriton(self._settings, services.config.daemon.state_dir)
        )

    async def start(self) -> None:
        if self.bundled is not None:
            await self.bundled.start()
        else:
            log.info("using Triton at %s", self.url)

    async def stop(self, deadline: float) -> None:
        if self.bundled is not None:
            await self.bundled.stop(deadline)

    def health(self) -> Health:
        from daemon.app import Health

        from daemon.inference.triton_remote import readiness

        # Every configured server (url + extra_urls), with the TLS settings and header of [triton].
        up, detail = readiness(self._config)
        self._ready_gauge.set(1 if up else 0)
        return Health(up, detail)


def model_readiness(
    url: str,
    model: str,
    timeout: float = 2.0,
    *,
    client_options: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[bool, str]:
    """(up, detail) for Triton at `url` and `model`, without raising."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    sent = dict(headers or {}) or None
    try:
        client = grpcclient.InferenceServerClient(url, **dict(client_options or {}))
        try:
            if not client.is_server_ready(headers=sent, client_timeout=timeout):
                return False, f"Triton at {url} not ready"
            if not client.is_model_ready(model, headers=sent, client_timeout=timeout):
                return False, f"Triton at {url} ready, model {model} not loaded"
            versions = client.get_model_metadata(model, headers=sent, client_timeout=timeout).versions
            return True, f"{url} model {model}:{','.join(versions) or '?'}"
        finally:
            client.close()
    except InferenceServerException as exc:
        return False, f"Triton at {url} unreachable ({exc.status() or 'error'})"


def build_triton_component(services: Services) -> TritonComponent | None:
    return TritonComponent(services) if services.config.triton.enabled else None

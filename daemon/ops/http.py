"""The loopback HTTP endpoint: Prometheus /metrics, /healthz, /readyz and /status (JSON for `neurolabel status`)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Info, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon import __version__
from daemon.store.queue import depths

if TYPE_CHECKING:
    from daemon.app import Daemon, Health, Services

log = logging.getLogger("neurolabel.http")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s", format % args)


class HttpEndpoint:
    """Component serving metrics and health over HTTP on [metrics] host:port."""

    name = "http"

    def __init__(self, services: Services) -> None:
        self._services = services
        self._daemon: Daemon | None = None
        self._server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._metrics_app = make_wsgi_app(services.registry)
        Info("neurolabel_build", "neurolabel version", registry=services.registry).info({"version": __version__})
        services.registry.register(_StateCollector(self))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def attach(self, daemon: Daemon) -> None:
        self._daemon = daemon

    async def start(self) -> None:
        settings = self._services.config.metrics
        self._server = make_server(
            settings.host, settings.port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="neurolabel-http", daemon=True)
        self._thread.start()
        log.info("http endpoint on %s:%d", settings.host, self.port)

    async def stop(self, deadline: float) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()

    def health(self) -> Health:
        from daemon.app import Health

        return Health(up=self._server is not None)

    def status(self) -> dict[str, Any]:
        components = self._daemon.health() if self._daemon else {}
        try:
            queue = depths(self._services.database)
            database_up = True
        except Exception as exc:  # the status page must answer even when the database does not
            log.warning("status: database unavailable: %s", type(exc).__name__)
            queue, database_up = {}, False
        details = {name: {"up": h.up, "detail": h.detail} for name, h in components.items()}
        details["database"] = {"up": database_up, "detail": self._services.database.dialect}
        started = self._daemon is not None and self._daemon.accepting
        if not started:
            details["startup"] = {"up": False, "detail": "components still starting or stopping"}
        return {
            "instance": self._services.instance_name,
            "ready": started and all(item["up"] for item in details.values()),
            "components": details,
            "queue": queue,
        }

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _json(start_response, "200 OK", {"alive": True})
        if path in ("/readyz", "/status"):
            status = self.status()
            code = "200 OK" if status["ready"] else "503 Service Unavailable"
            return _json(start_response, code, status if path == "/status" else {"ready": status["ready"]})
        return _json(start_response, "404 Not Found", {"error": "not found"})


class _StateCollector(Collector):
    """Queue depths and component states, read at scrape time."""

    def __init__(self, endpoint: HttpEndpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterable[Metric]:
        status = self._endpoint.status()
        up = GaugeMetricFamily("neurolabel_component_up", "1 when the component is up", labels=["component"])
        for name, item in status["components"].items():
            up.add_metric([name], 1.0 if item["up"] else 0.0)
        yield up
        queue = GaugeMetricFamily("neurolabel_jobs", "jobs in the work queue", labels=["kind", "state"])
        for kind, states in status["queue"].items():
            for state, count in states.items():
                queue.add_metric([kind, state], float(count))
        yield queue


def _json(start_response: StartResponse, code: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def build_http_endpoint(services: Services) -> HttpEndpoint | None:
    return HttpEndpoint(services) if services.config.metrics.enabled else None

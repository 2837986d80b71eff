"""The daemon starts and stops in-process, on port 0, without signals."""

from __future__ import annotations

import asyncio
import gc
import json
import urllib.request

import pytest

from daemon.app import event_loop_factory, serve, start_daemon, stop_daemon
from daemon.config import Config
from daemon.ops.http import HttpEndpoint


async def test_daemon_starts_serves_status_and_stops(test_config: Config) -> None:
    daemon = await start_daemon(test_config)
    try:
        http = daemon.component("http")
        assert isinstance(http, HttpEndpoint)
        body = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{http.port}/status")
        assert body["ready"] is True
        assert body["components"]["database"]["up"] is True
        assert (await asyncio.to_thread(_get_json, f"http://127.0.0.1:{http.port}/healthz")) == {"alive": True}
        metrics = await asyncio.to_thread(_get_text, f"http://127.0.0.1:{http.port}/metrics")
        assert 'neurolabel_build_info{version="' in metrics
        assert 'neurolabel_component_up{component="http"} 1.0' in metrics
    finally:
        await stop_daemon(daemon, drain_seconds=5)
    assert daemon.components == []


async def test_serve_returns_when_shutdown_is_set(test_config: Config) -> None:
    shutdown = asyncio.Event()
    task = asyncio.create_task(serve(test_config, shutdown))
    await asyncio.sleep(0)
    shutdown.set()
    await asyncio.wait_for(task, timeout=30)


async def test_serve_can_freeze_the_start_up_objects(test_config: Config) -> None:
    assert gc.get_freeze_count() == 0
    shutdown = asyncio.Event()
    task = asyncio.create_task(serve(test_config, shutdown, freeze_start_up_objects=True))
    try:
        async with asyncio.timeout(30):
            while gc.get_freeze_count() == 0:
                await asyncio.sleep(0.01)
    finally:
        shutdown.set()
        await asyncio.wait_for(task, timeout=30)
        gc.unfreeze()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_event_loop_choice() -> None:
    assert event_loop_factory("asyncio") is None
    uvloop = pytest.importorskip("uvloop")
    for choice in ("auto", "uvloop"):
        factory = event_loop_factory(choice)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()

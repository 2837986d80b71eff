"""The one owner of lifecycle: start in dependency order, stop in reverse, drain to a deadline.

Order: database -> recovery of interrupted work -> inference -> workers ->
scheduler -> listeners (last, so nothing is accepted before it can be stored).
The shutdown trigger is an asyncio.Event the caller owns, so tests stop the
daemon without signals; `run_until_signalled` binds it to SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry

from daemon.audit.config_load import record_config_load
from daemon.config import Config
from daemon.inference.triton_server import with_concrete_ports
from daemon.ops.metrics import StageMetrics
from daemon.store.database import Database, open_database
from daemon.store.migrate import ensure_at_head, upgrade_to_head
from daemon.store.queue import recover_at_start
from daemon.work.wakeup import WorkSignal

log = logging.getLogger("neurolabel.app")


@dataclass(frozen=True)
class Health:
    up: bool
    detail: str = ""


class Component(Protocol):
    """A part of the daemon with a lifecycle. `stop` must return by `deadline` (time.monotonic())."""

    name: str

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...

    def health(self) -> Health: ...


@dataclass(frozen=True)
class Services:
    """What components share; passed explicitly to each component's factory."""

    config: Config
    database: Database
    work_signal: WorkSignal
    instance_name: str
    registry: CollectorRegistry
    # The per-stage Prometheus metrics on `registry` (daemon/ops/metrics.py); made from it when not given.
    metrics: StageMetrics = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.metrics is None:
            object.__setattr__(self, "metrics", StageMetrics.create(self.registry))


ComponentFactory = Callable[[Services], Component | None]


@runtime_checkable
class NeedsDaemon(Protocol):
    """A component that reports on the others (the health endpoint) gets the daemon before it starts."""

    def attach(self, daemon: "Daemon") -> None: ...


@dataclass
class Daemon:
    """A running daemon: its services and its started components, in start order."""

    services: Services
    components: list[Component] = field(default_factory=list)
    # True once every component has started (and until stopping begins): readiness needs it.
    accepting: bool = False

    def health(self) -> dict[str, Health]:
        return {component.name: component.health() for component in self.components}

    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)


def default_instance_name(config: Config) -> str:
    return config.daemon.instance_name or f"{socket.gethostname()}-{os.getpid()}"


def component_factories() -> Sequence[ComponentFactory]:
    """Every component, in start order. Each factory returns None when its part is disabled."""
    from daemon.audit.file_sink import build_audit_file
    from daemon.dicom.scp import build_dicom_listener
    from daemon.hl7.listener import build_hl7_listener
    from daemon.inference.component import build_triton_component
    from daemon.ops.http import build_http_endpoint
    from daemon.store.leases import build_lease_keeper
    from daemon.store.notify import build_job_notifications
    from daemon.work.component import build_job_runner
    from daemon.work.scheduler import build_scheduler

    factories: list[ComponentFactory] = [
        build_audit_file,
        # before the workers and stopped after them: their job leases stay fresh while they drain
        build_lease_keeper,
        # PostgreSQL: other instances' new jobs wake this one's workers
        build_job_notifications,
        build_triton_component,
        build_job_runner,
        build_scheduler,
        # the listeners last: nothing is accepted before it can be stored
        build_http_endpoint,
        build_hl7_listener,
        build_dicom_listener,
    ]
    return factories


async def start_daemon(config: Config, factories: Sequence[ComponentFactory] | None = None) -> Daemon:
    """Open the database, recover interrupted work, then start components in order."""
    loop = asyncio.get_running_loop()
    config = with_concrete_ports(config)
    config.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    database = open_database(config.database.url)
    if config.database.auto_migrate:
        await asyncio.to_thread(upgrade_to_head, database)
    else:
        await asyncio.to_thread(ensure_at_head, database)
    instance_name = default_instance_name(config)
    await asyncio.to_thread(record_config_load, database, config, instance_name)
    recovered = await asyncio.to_thread(recover_at_start, database, instance_name)
    if recovered:
        log.info("recovered %d interrupted jobs", recovered)
    services = Services(
        config=config,
        database=database,
        work_signal=WorkSignal(loop),
        instance_name=instance_name,
        registry=CollectorRegistry(),
    )
    daemon = Daemon(services=services)
    try:
        for factory in factories if factories is not None else component_factories():
            component = factory(services)
            if component is None:
                continue
            started = time.monotonic()
            if isinstance(component, NeedsDaemon):
                component.attach(daemon)
            await component.start()
            daemon.components.append(component)
            log.info("started %s in %.0f ms", component.name, (time.monotonic() - started) * 1000)
    except BaseException:
        await stop_daemon(daemon, drain_seconds=config.daemon.drain_seconds)
        raise
    daemon.accepting = True
    return daemon


async def stop_daemon(daemon: Daemon, drain_seconds: float) -> None:
    """Stop components in reverse order; each gets what is left of the drain deadline."""
    daemon.accepting = False
    deadline = time.monotonic() + drain_seconds
    while daemon.components:
        component = daemon.components.pop()
        try:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.wait_for(component.stop(deadline), timeout=remaining + 5.0)
            log.info("stopped %s", component.name)
        except Exception:
            log.exception("error while stopping %s", component.name)
    daemon.services.database.dispose()


async def serve(
    config: Config,
    shutdown: asyncio.Event,
    factories: Sequence[ComponentFactory] | None = None,
    freeze_start_up_objects: bool = False,
) -> None:
    """Start, wait for `shutdown`, stop. The whole life of a daemon.

    `freeze_start_up_objects` (the daemon's own process): once started, collect the start-up garbage and move
    every object left (modules, configuration, the DICOM presentation contexts, compiled statements: some
    400,000) out of the garbage collector's reach with gc.freeze(), so that full collections stop walking
    them again; about half of the collector's time on a 5,000-report run (docs/benchmarks.md).
    """
    daemon = await start_daemon(config, factories)
    if freeze_start_up_objects:
        gc.collect()
        gc.freeze()
    log.info("neurolabel ready (instance %s)", daemon.services.instance_name)
    try:
        await shutdown.wait()
        log.info("stopping: draining for up to %.0f s", config.daemon.drain_seconds)
    finally:
        await stop_daemon(daemon, config.daemon.drain_seconds)


def run_until_signalled(config: Config, factories: Sequence[ComponentFactory] | None = None) -> None:
    """`neurolabel run`: first SIGTERM/SIGINT drains, a second SIGINT forces an immediate stop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        shutdown = asyncio.Event()
        serving = asyncio.current_task()
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("received %s", signal.Signals(signum).name)
                shutdown.set()
            elif signum == signal.SIGINT and serving is not None:
                log.warning("second SIGINT: stopping now")
                serving.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        log.info("event loop: %s", type(loop).__module__.split(".")[0])
        await serve(config, shutdown, factories, freeze_start_up_objects=True)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(config.daemon.event_loop)) as runner:
            runner.run(main())
    except asyncio.CancelledError:
        pass


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """[daemon] event_loop: "auto" is uvloop when it is installed (a dependency on Linux and macOS), else
    asyncio's own loop (None); "uvloop" requires it; "asyncio" never uses it. uvloop makes the HL7 listener's
    network side cheaper (docs/benchmarks.md, HL7 intake)."""
    if choice == "asyncio" or (choice == "auto" and find_spec("uvloop") is None):
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError("[daemon] event_loop = \"uvloop\" but uvloop is not installed") from exc
    return uvloop.new_event_loop

"""The "workers" component: one JobRunner with every job kind this instance handles.

classify (when [triton] enabled), link, study_stable, withdraw, and writeback/forward from
daemon/work/writeback.py (`writeback_handlers(services)`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemon.work.classify import CLASSIFY, build_classify_handler
from daemon.work.link_jobs import link_handlers
from daemon.work.runner import BatchHandler, Handler, JobRunner

if TYPE_CHECKING:
    from daemon.app import Services

WRITEBACK_HANDLERS = ("daemon.work.writeback", "writeback_handlers")


def optional_function(module: str, name: str) -> Callable[..., Any] | None:
    """A function another part of the daemon provides, or None while that module does not exist."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return None
        raise
    return found if callable(found) else None


def job_handlers(services: Services) -> dict[str, Handler | BatchHandler]:
    handlers: dict[str, Handler | BatchHandler] = {}
    classify = build_classify_handler(services)
    if classify is not None:
        handlers[CLASSIFY] = classify
    handlers.update(link_handlers(services))
    writeback = optional_function(*WRITEBACK_HANDLERS)
    if writeback is not None:
        handlers.update(writeback(services))
    return handlers


def build_job_runner(services: Services) -> JobRunner:
    return JobRunner(services, job_handlers(services))

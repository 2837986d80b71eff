"""Wakes workers when work arrives, from any thread, instead of polling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class WorkSignal:
    """One asyncio.Event per job kind; `notify` is safe to call from other threads (pynetdicom's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: dict[str, asyncio.Event] = {}

    def _event(self, kind: str) -> asyncio.Event:
        event = self._events.get(kind)
        if event is None:
            event = self._events[kind] = asyncio.Event()
        return event

    def notify(self, kind: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event(kind).set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self._event(kind).set())

    async def wait(self, kinds: Iterable[str], timeout: float | None) -> bool:
        """Wait until one of `kinds` is notified or the timeout passes; True if notified."""
        events = [self._event(kind) for kind in kinds]
        for event in events:
            if event.is_set():
                event.clear()
                return True
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        for event in events:
            event.clear()
        return bool(done)

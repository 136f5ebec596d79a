"""An asyncio work queue with per-key de-duplication, serial processing per key and capped backoff.

The same key is never processed by two workers at once; adding a key while it is processed marks it
dirty so it runs again right after. Failures back off exponentially (1 s → 5 min), successes reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Handler = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    """Run ``handler(key)`` for added keys; the handler returns seconds until a re-check, or None."""

    def __init__(self, handler: Handler, workers: int = 4, base_delay: float = 1.0, max_delay: float = 300.0):
        self._handler = handler
        self._workers = workers
        self._base, self._max = base_delay, max_delay
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Process ``key`` after ``delay`` seconds (an earlier pending time wins)."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            pending = self._timers.get(key)
            if pending and pending.when() <= loop.time() + delay:
                return
            if pending:
                pending.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def forget(self, key: Hashable) -> None:
        """Drop timers and backoff state of a deleted object."""
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        self._failures.pop(key, None)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        """Start the workers in the running loop."""
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        """Cancel the workers and pending timers."""
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                again = await self._handler(key)
                self._failures.pop(key, None)
                if again is not None:
                    self.add(key, again)
            except Exception as err:  # any failure is retried with backoff; log it with its key
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = min(self._max, self._base * 2**count)
                log.warning("reconcile of %s failed (retry in %.0fs): %s", key, delay, err)
                self.add(key, delay)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)

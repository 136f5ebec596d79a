"""The work queue: de-duplication, one worker per key at a time, re-run when dirtied, backoff on errors."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable

from tritonops.workqueue import WorkQueue


async def _drain(q: WorkQueue, done: asyncio.Event, timeout: float = 5.0) -> None:
    q.start()
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await q.stop()


def test_duplicate_adds_coalesce() -> None:
    seen: list[Hashable] = []
    done = asyncio.Event()

    async def handler(key: Hashable) -> float | None:
        seen.append(key)
        if len(seen) >= 2:
            done.set()
        return None

    async def main() -> None:
        q = WorkQueue(handler, workers=2)
        for _ in range(5):
            q.add("a")
        q.add("b")
        await _drain(q, done)

    asyncio.run(main())
    assert sorted(map(str, seen)) == ["a", "b"]


def test_key_added_while_running_runs_again_but_never_concurrently() -> None:
    running, max_running, calls = 0, 0, 0
    done = asyncio.Event()
    q: WorkQueue

    async def handler(key: Hashable) -> float | None:
        nonlocal running, max_running, calls
        running += 1
        max_running = max(max_running, running)
        calls += 1
        if calls == 1:
            q.add(key)  # an event arrives while the key is being reconciled
            q.add(key)
            await asyncio.sleep(0.05)
        running -= 1
        if calls == 2:
            done.set()
        return None

    async def main() -> None:
        nonlocal q
        q = WorkQueue(handler, workers=4)
        q.add("k")
        await _drain(q, done)

    asyncio.run(main())
    assert (calls, max_running) == (2, 1)


def test_failures_back_off_then_succeed() -> None:
    attempts: list[float] = []
    done = asyncio.Event()

    async def handler(key: Hashable) -> float | None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise RuntimeError("conflict")
        done.set()
        return None

    async def main() -> None:
        q = WorkQueue(handler, workers=1, base_delay=0.05, max_delay=1.0)
        q.add("k")
        await _drain(q, done)

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 3 and gaps[0] >= 0.04 and gaps[1] >= 0.09


def test_requeue_after_success() -> None:
    calls = 0
    done = asyncio.Event()

    async def handler(key: Hashable) -> float | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            done.set()
        return 0.01

    async def main() -> None:
        q = WorkQueue(handler, workers=1)
        q.add("k")
        await _drain(q, done)

    asyncio.run(main())
    assert calls == 2

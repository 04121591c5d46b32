"""A work queue with client-go's guarantees, for asyncio.

A key is queued at most once however often it is added, and never handed to two workers at the same
time; a key added while being worked on is handed out again once the worker is done. Delayed adds serve
requeues (certificate renewals, rollouts) and retry backoff.

Two lanes, as controller-runtime's priority queue has: a change that concerns one SMD goes first, and
wake-ups of many at once (a resync, a cluster-wide binding, a new leader) wait behind it, so that
tampering with one model is looked at before a fleet is judged again. A key added to both is served
from the first.
"""

from __future__ import annotations

import asyncio
from collections import deque

FIRST, BEHIND = 0, 1


class WorkQueue:
    def __init__(self) -> None:
        self._lanes: tuple[deque[str], deque[str]] = (deque(), deque())
        # Key -> its lane. A key moved to the first lane stays in the other's deque, skipped there.
        self._queued: dict[str, int] = {}
        self._active: set[str] = set()
        self._dirty: dict[str, int] = {}  # added while active: handed out again, in this lane
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._waiting = asyncio.Event()

    def add(self, key: str, lane: int = FIRST) -> None:
        if key in self._active:
            self._dirty[key] = min(lane, self._dirty.get(key, lane))
            return
        queued = self._queued.get(key)
        if queued is not None and queued <= lane:
            return
        self._queued[key] = lane
        self._lanes[lane].append(key)
        self._waiting.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add the key after `delay` seconds; an earlier pending add for the key wins."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _next(self) -> str | None:
        for number, lane in enumerate(self._lanes):
            while lane:
                key = lane.popleft()
                if self._queued.get(key) == number:
                    del self._queued[key]
                    return key
        return None

    async def get(self) -> str:
        while (key := self._next()) is None:
            self._waiting.clear()
            await self._waiting.wait()
        self._active.add(key)
        return key

    def done(self, key: str, *, drop_news: bool = False) -> None:
        """The worker is done with the key. News that came in meanwhile hands it out again, unless
        `drop_news`: then the caller takes what happened during its work as seen."""
        self._active.discard(key)
        lane = self._dirty.pop(key, None)
        if lane is not None and not drop_news:
            self.add(key, lane)

    def forget(self, key: str) -> None:
        """Cancel a pending delayed add (the object is gone)."""
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

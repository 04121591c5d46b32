"""A work queue with client-go's guarantees, for asyncio.

A key is queued at most once however often it is added, and never handed to two workers at the same
time; a key added while being worked on is handed out again once the worker is done. Delayed adds serve
requeues (certificate renewals, rollouts) and retry backoff.
"""

from __future__ import annotations

import asyncio


class WorkQueue:
    def __init__(self) -> None:
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}

    def add(self, key: str) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

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

    async def get(self) -> str:
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: str, *, drop_news: bool = False) -> None:
        """The worker is done with the key. News that came in meanwhile hands it out again, unless
        `drop_news`: then the caller takes what happened during its work as seen."""
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            if not drop_news:
                self.add(key)

    def forget(self, key: str) -> None:
        """Cancel a pending delayed add (the object is gone)."""
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)

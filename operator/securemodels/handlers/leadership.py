"""Leader election on a coordination.k8s.io Lease, with client-go's timing rules.

Every replica keeps its caches warm; only the one holding the Lease reconciles and writes. The holder
renews every `retryPeriodSeconds`; one that has not renewed for `renewDeadlineSeconds` stops writing, which
is before the Lease, `leaseDurationSeconds` after its last renewal, can pass to another replica: at no time
do two replicas write. A replica takes the Lease only once it has expired, or when it holds it already.

`decide` is the pure rule; `Elector` does the I/O and reports through callbacks; `ElectionThread` runs it
on a thread and connection of its own, as client-go runs it in a goroutine of its own: reconciles that
keep the main event loop busy cannot delay a renewal until the Lease is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from securemodels import metrics
from securemodels.config import LeaderElection
from securemodels.k8s.client import Kube, KubeError

log = logging.getLogger(__name__)
_MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _parse(moment: str | None) -> datetime | None:
    if not moment:
        return None
    for layout in (_MICROTIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(moment, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_MICROTIME)


@dataclass(frozen=True)
class Decision:
    """What to write to take or keep the Lease; None: it is someone else's for now."""

    spec: dict[str, Any] | None


def decide(spec: dict[str, Any] | None, identity: str, now: datetime, settings: LeaderElection) -> Decision:
    """The Lease's next spec for `identity`, given its current one (None: no Lease yet)."""
    current = spec or {}
    holder = current.get("holderIdentity") or ""
    renewed = _parse(current.get("renewTime"))
    duration = timedelta(
        seconds=float(current.get("leaseDurationSeconds") or settings.lease_duration_seconds)
    )
    expired = renewed is None or renewed + duration <= now
    if holder and holder != identity and not expired:
        return Decision(None)
    taking = holder != identity
    transitions = int(current.get("leaseTransitions") or 0) + (1 if taking and holder else 0)
    return Decision(
        {
            "holderIdentity": identity,
            "leaseDurationSeconds": settings.lease_duration_seconds,
            "acquireTime": _format(now) if taking else current.get("acquireTime") or _format(now),
            "renewTime": _format(now),
            "leaseTransitions": transitions,
        }
    )


class Elector:
    """Takes and keeps the Lease; `on_start` and `on_stop` are called as leadership comes and goes."""

    def __init__(
        self,
        kube: Kube,
        settings: LeaderElection,
        namespace: str,
        identity: str,
        on_start: Callable[[], None],
        on_stop: Callable[[], None],
    ) -> None:
        self._kube, self._settings, self._namespace = kube, settings, namespace
        self.identity = identity
        self._on_start, self._on_stop = on_start, on_stop
        self.leading = False
        self._renewed_at = -float("inf")  # monotonic time of the last successful renewal
        self.answered_at = -float("inf")  # monotonic time the API server last answered

    def silent_for(self) -> float:
        """Seconds since the API server last answered this replica's Lease questions."""
        return time.monotonic() - self.answered_at

    def may_write(self) -> bool:
        """Whether this replica may write now: it leads, and renewed recently enough that nobody else
        can have taken the Lease."""
        return self.leading and time.monotonic() - self._renewed_at < self._settings.renew_deadline_seconds

    async def _attempt(self) -> bool:
        lease = await self._kube.get("Lease", self._settings.lease_name, self._namespace)
        asked = self.answered_at = time.monotonic()
        decision = decide((lease or {}).get("spec"), self.identity, datetime.now(UTC), self._settings)
        if decision.spec is None:
            return False
        manifest: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._settings.lease_name, "namespace": self._namespace},
            "spec": decision.spec,
        }
        if lease is None:
            await self._kube.create(manifest, fenced=False)
        else:
            manifest["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
            await self._kube.replace(manifest, fenced=False)
        self._renewed_at = asked  # counted from before the write: the Lease's clock started no later
        return True

    async def release(self) -> None:
        """On a clean stop, hand the Lease back at once rather than let the next leader wait for it to
        expire."""
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        try:
            lease = await self._kube.get("Lease", self._settings.lease_name, self._namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "renewTime": _format(datetime.now(UTC))}
            await self._kube.replace({**lease, "spec": spec}, fenced=False)
        except KubeError as error:
            log.warning("could not release the lease: %s", error)

    async def run(self) -> None:
        while True:
            try:
                held = await self._attempt()
            except KubeError as error:
                if error.code != 409:  # 409: another replica wrote first, which is a plain "no"
                    log.warning("leader election: %s", error)
                held = False
            if held and not self.leading:
                self.leading = True
                metrics.LEADER.set(1)
                log.info("leading as %s", self.identity)
                self._on_start()
            elif self.leading and not self.may_write():
                self.leading = False
                metrics.LEADER.set(0)
                log.warning(
                    "lost the lease: no renewal for %ss; stopped writing",
                    self._settings.renew_deadline_seconds,
                )
                self._on_stop()
            await asyncio.sleep(self._settings.retry_period_seconds)


class ElectionThread:
    """The Elector on a thread and event loop of its own; its Kube is its own connection too. The
    callbacks run on that thread: hand them to the main loop with `call_soon_threadsafe`."""

    def __init__(self, elector: Elector, kube: Kube) -> None:
        self.elector, self._kube = elector, kube
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._main, name="leader election", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._running.wait()

    def _main(self) -> None:
        asyncio.run(self._elect())

    async def _elect(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._running.set()
        task = asyncio.create_task(self.elector.run())
        try:
            await self._stopping.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.elector.release()
            await self._kube.close()

    async def stop(self) -> None:
        """Hand the Lease back and end the thread."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        await asyncio.to_thread(self._thread.join, 30)

"""Writes each namespace's compliance report (desired/reports.py) when, and only when, it differs from
what the cluster holds.

The SMDs' statuses come from the operator's own watch of them and the reports from a watch-fed cache of
the operator's reports, so comparing costs the API server nothing; a write is a dry-run-validated POST
or a PUT at the judged resourceVersion, stamped like every object the operator writes. A report with the
name but not the operator's labels is someone else's: never changed, reported once. A report the
operator no longer needs is deleted only when it carries its stamp, with uid and resourceVersion
preconditions.

Only the leader writes. A change of an SMD's status marks its namespace; after a pause of a few
seconds (so a burst of status writes makes one report write) the marked namespaces are compared, and
every namespace once per resync period, which also catches up after a change of leader.

Without the report API in the cluster (its CRD not installed) nothing is written: a Warning Event on the
operator's CA Secret and one log line say so, and the API is looked for again after a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from securemodels.config import OperatorConfig
from securemodels.desired import naming
from securemodels.desired import reports as builder
from securemodels.k8s import cache, events
from securemodels.k8s.client import Kube, KubeError

log = logging.getLogger(__name__)
# A namespace's report is written at most this often however fast its models' statuses change: it
# grows with the namespace, and during a rollout of hundreds of models each change would rewrite it.
COALESCE_SECONDS = 5.0
MAX_LOOK_AGAIN = 600.0
UNAVAILABLE = "ComplianceReportsUnavailable"


class ReportWriter:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        smds: Mapping[str, Mapping[str, Any]],
        namespaces: cache.Store,
        secrets: cache.Store,
        stamp_key: Callable[[], Awaitable[bytes]],
        leading: asyncio.Event,
        clock: Callable[[], datetime],
    ) -> None:
        self._kube, self._config, self._smds = kube, config, smds
        self._namespaces, self._secrets, self._stamp_key = namespaces, secrets, stamp_key
        self._leading, self._clock = leading, clock
        self._settings = config.policy_reports
        self.kind = self._settings.kind
        self.store = cache.Store(self.kind)
        scopes: list[str | None] = list(config.watch_namespaces) or [None]
        self._reflectors = [
            cache.Reflector(kube, self.store, self._on_change, namespace=scope, labels=builder.LABELS)
            for scope in scopes
        ]
        self._marked: set[str] = set()
        self._wake = asyncio.Event()
        self._taken: set[str] = set()  # namespaces where someone else holds the report's name
        self.unavailable: str | None = None  # why no report is written, while the API is missing
        self._announced = False
        self._failing: dict[str, tuple[int, float]] = {}  # namespace -> (failed writes, when to try again)

    # -- what to look at ----------------------------------------------------------------------------

    def changed(self, namespace: str) -> None:
        """An SMD of the namespace changed (its status, or it came or went)."""
        self._marked.add(namespace)
        self._wake.set()

    def _on_change(self, _: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for item in (old, new):
            if item is not None:
                self.changed(str(item["metadata"]["namespace"]))

    def _with_smds(self) -> set[str]:
        return {str(body["metadata"]["namespace"]) for body in list(self._smds.values())}

    # -- running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        if not self._settings.enabled:
            return
        await self._until_served()
        tasks = [
            asyncio.create_task(reflector.run(), name=f"watch {self.kind}") for reflector in self._reflectors
        ]
        try:
            await asyncio.gather(*(reflector.synced.wait() for reflector in self._reflectors))
            while True:
                resync = False
                try:
                    await asyncio.wait_for(self._wake.wait(), self._config.resync_seconds)
                except TimeoutError:
                    resync = True
                self._wake.clear()
                if not self._leading.is_set():
                    continue
                await asyncio.sleep(COALESCE_SECONDS)
                self._wake.clear()
                marked, self._marked = self._marked, set()
                if resync:
                    marked |= self._with_smds() | {key[0] for key in self.store}
                for namespace in sorted(marked):
                    await self.sync(namespace)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _until_served(self) -> None:
        """Wait until the report API answers a list; say once that it does not, then look again after a
        pause that doubles from the resync period up to ten minutes."""
        pause = self._config.resync_seconds
        scope = self._config.watch_namespaces[0] if self._config.watch_namespaces else None
        while True:
            try:
                await self._kube.list(self.kind, scope, builder.LABELS, limit=1)
            except KubeError as error:
                if self.unavailable is None:
                    self.unavailable = (
                        f"{self.kind} ({self._settings.api}) cannot be listed ({error}): no compliance "
                        "report is written. Install its CRD, or set policyReports.enabled: false."
                    )
                    log.warning("%s", self.unavailable)
                await self._announce_within(pause)
                pause = min(MAX_LOOK_AGAIN, pause * 2)
                continue
            if self.unavailable is not None:
                log.info("%s (%s) is served now: writing compliance reports", self.kind, self._settings.api)
                self.unavailable = None
            return

    async def _announce_within(self, pause: float) -> None:
        """Sleep `pause` seconds; announce as soon as there is something to report (an SMD that comes
        meanwhile wakes it), not only when the pause is over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + pause
        await self._announce()
        while not self._announced and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
            self._wake.clear()
            await self._announce()
        await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def _announce(self) -> None:
        """One Warning Event per run, on the CA Secret (where the operator's own Events go), by the
        leader, once there is something to report (the CA exists once a model was reconciled)."""
        if self._announced or not self._leading.is_set() or not self._smds:
            return
        secret = self._secrets.get(self._config.namespace, naming.CA_SECRET)
        if secret is None or self.unavailable is None:
            return
        self._announced = True
        await events.post(
            self._kube, events.about(secret), "Warning", UNAVAILABLE, self.unavailable, self._clock()
        )

    # -- one namespace -------------------------------------------------------------------------------

    async def sync(self, namespace: str) -> None:
        """Compare the namespace's report with what it should be, and write it if they differ."""
        now = asyncio.get_running_loop().time()
        attempts, not_before = self._failing.get(namespace, (0, now))
        if not_before > now:
            return  # failed lately; the resync after its pause tries again
        try:
            await self._sync(namespace)
        except KubeError as error:
            if error.code == 409:
                # Changed meanwhile: the watch brings the new version, and with it another look.
                log.info("compliance report of %s changed meanwhile; looking again", namespace)
                return
            pause = min(MAX_LOOK_AGAIN, self._config.resync_seconds * 2**attempts)
            self._failing[namespace] = (attempts + 1, now + pause)
            log.warning(
                "could not write the compliance report of %s: %s; trying again in %.0fs",
                namespace,
                error,
                pause,
            )
            return
        self._failing.pop(namespace, None)

    async def _sync(self, namespace: str) -> None:
        found = self._namespaces.get(None, namespace)
        if found is None:
            return  # going away, or not seen yet
        namespace_uid = str(found["metadata"].get("uid") or "")
        smds = [body for body in list(self._smds.values()) if body["metadata"]["namespace"] == namespace]
        wanted = builder.report(self._settings.api, namespace, smds)
        live = self.store.get(namespace, builder.NAME)
        key = await self._stamp_key()
        if wanted is None:
            if live is not None and builder.intact(key, namespace_uid, live):
                await self._delete(live)
            return
        if live is not None and builder.is_current(key, namespace_uid, live, wanted):
            return
        if live is None and namespace in self._taken:
            if await self._kube.get(self.kind, builder.NAME, namespace) is not None:
                return  # still someone else's
            self._taken.discard(namespace)
        await self._write(namespace, namespace_uid, key, wanted, live)

    async def _write(
        self,
        namespace: str,
        namespace_uid: str,
        key: bytes,
        wanted: dict[str, Any],
        live: dict[str, Any] | None,
    ) -> None:
        request = wanted
        if live is not None:
            metadata = {**wanted["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}
            request = {**wanted, "metadata": metadata}
        send = self._kube.replace if live is not None else self._kube.create
        try:
            shown = await send(request, dry_run=True)
            written = await send(builder.stamped(key, namespace_uid, request, shown))
        except KubeError as error:
            if error.code == 409 and live is None:
                if namespace not in self._taken:
                    log.warning(
                        "%s %s/%s exists and is not the operator's: left alone, no compliance report there",
                        self.kind,
                        namespace,
                        builder.NAME,
                    )
                self._taken.add(namespace)
                return
            raise
        self.store.put(cache.without_managed_fields(written))

    async def _delete(self, live: dict[str, Any]) -> None:
        metadata = live["metadata"]
        try:
            await self._kube.delete(
                self.kind,
                metadata["name"],
                metadata["namespace"],
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            )
        except KubeError as error:
            if error.code != 409:
                raise
        self.store.remove(cache.key_of(live))

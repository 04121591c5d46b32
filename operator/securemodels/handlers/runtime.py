"""The running operator: kopf's watch feeds a work queue; workers reconcile; a resync loop re-checks.

kopf's low-level `on.event` handler stores nothing on the SMD (no annotations, no finalizer), so the
user's object stays exactly as applied (Argo CD sees no drift), deletion is never blocked by the operator
being down, and the reconcile stays level-based. Periodic resync replaces kopf timers, which would put a
finalizer on every SMD.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from securemodels import metrics
from securemodels.api import v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired import naming
from securemodels.handlers import permissions
from securemodels.handlers.reconcile import Clock, Reconciler
from securemodels.k8s import read
from securemodels.k8s.client import Credentials, Kube, KubeError, credentials_source, load_config
from securemodels.server import HealthServer
from securemodels.workqueue import WorkQueue

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0
ORPHAN_SWEEP_EVERY = 10  # resync periods


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Operator:
    """Shared state of one running operator. Keys are "<namespace>/<name>"."""

    config: OperatorConfig
    kube: Kube
    credentials: Callable[[], Credentials]
    clock: Clock = utc_now
    queue: WorkQueue = field(default_factory=WorkQueue)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    missing_permissions: list[str] = field(default_factory=list)
    permissions_checked: bool = False
    watching: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(self.kube, self.config, self.clock)

    # -- feeding the queue ------------------------------------------------------------------------

    def on_smd_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        known = self.bodies.get(key)
        if event_type == "DELETED":
            self.bodies.pop(key, None)
        else:
            self.bodies[key] = dict(body)
            self.uids[key] = body["metadata"]["uid"]
        metrics.MANAGED_RESOURCES.set(len(self.bodies))
        # Our own status writes come back as events too; only a new spec (generation) is news.
        unchanged_spec = (
            event_type != "DELETED"
            and known is not None
            and known["metadata"]["uid"] == body["metadata"]["uid"]
            and known["metadata"].get("generation") == body["metadata"].get("generation")
        )
        if not unchanged_spec:
            self.queue.add(key)

    def on_deployment_event(self, deployment: Mapping[str, Any]) -> None:
        """A rollout moved on. Only news while the SMD waits for it: drift on a settled SMD is left to
        the resync, so its verdict stays visible for a full period."""
        metadata = deployment["metadata"]
        key = f"{metadata['namespace']}/{(metadata.get('labels') or {}).get('app.kubernetes.io/instance')}"
        if self.phases.get(key, "Progressing") == "Progressing":  # unknown yet: its first pass is running
            self.queue.add(key)

    async def resync(self) -> None:
        """Re-check every SMD each period; sweep orphans at the first pass and every tenth after."""
        for rounds in itertools.count():
            await asyncio.sleep(self.config.resync_seconds)
            for key in list(self.bodies):
                self.queue.add(key)
            try:
                if self.missing_permissions:  # someone may have fixed the RBAC: readiness follows
                    await self.check_permissions()
                if rounds % ORPHAN_SWEEP_EVERY == 0:
                    await self._sweep_orphans()
            except Exception:  # the loop must outlive any one round
                log.exception("resync housekeeping failed; trying again next period")

    # -- working it off ---------------------------------------------------------------------------

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: str) -> None:
        body = self.bodies.get(key)
        try:
            if body is None:
                await self._forget(key)
                return
            outcome = await self.reconciler.reconcile(body)
        except KubeError as error:
            self._retry(key, "api" if error.transient else f"http{error.code}", error)
            return
        except Exception as error:
            log.exception("reconcile of %s failed unexpectedly", key)
            self._retry(key, "internal", error)
            return
        self.failures.pop(key, None)
        self.phases[key] = outcome.phase
        current = self.bodies.get(key)
        if current is not None and current["metadata"]["uid"] == body["metadata"]["uid"]:
            # What we just wrote; the watch echoes it later, and a requeue must not act on older status.
            current["status"] = outcome.status
        if outcome.requeue_after is not None and outcome.requeue_after < self.config.resync_seconds:
            self.queue.add_after(key, outcome.requeue_after)

    def _retry(self, key: str, reason: str, error: Exception) -> None:
        metrics.RECONCILE_ERRORS.labels(reason=reason).inc()
        attempt = self.failures.get(key, 0)
        self.failures[key] = attempt + 1
        backoff = min(MAX_BACKOFF, 2.0 ** min(attempt, 10))
        delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
        log.warning("reconcile of %s failed (%s); retrying in %.1fs", key, error, delay)
        self.queue.add_after(key, delay)

    async def _forget(self, key: str) -> None:
        """The SMD is gone: its namespaced children go by garbage collection; remove the rest."""
        namespace, name = key.split("/", 1)
        self.queue.forget(key)
        self.phases.pop(key, None)
        metrics.forget(namespace, name)
        uid = self.uids.get(key)
        if uid is not None:
            for item in await read.remote_objects(self.kube, self.config.watch_namespaces, uid):
                metadata = item["metadata"]
                await self.kube.delete(item["kind"], metadata["name"], metadata["namespace"])
        self.uids.pop(key, None)  # only now: a failed deletion is retried with the uid
        self.failures.pop(key, None)

    async def _sweep_orphans(self) -> None:
        """Client Secrets and CA bundles whose SMD was deleted while the operator was not running."""
        try:
            items = await read.remote_objects(self.kube, self.config.watch_namespaces)
            for item in items:
                labels = item["metadata"].get("labels") or {}
                name, namespace = (
                    labels.get(naming.OWNER_NAME_LABEL),
                    labels.get(naming.OWNER_NAMESPACE_LABEL),
                )
                if not name or not namespace:
                    continue  # not labelled by us in full: not ours to judge
                owner = await self.kube.get(v1alpha1.KIND, name, namespace)
                if owner is None or owner["metadata"]["uid"] != labels[naming.OWNER_UID_LABEL]:
                    metadata = item["metadata"]
                    log.info(
                        "removing orphaned %s %s/%s", item["kind"], metadata["namespace"], metadata["name"]
                    )
                    await self.kube.delete(item["kind"], metadata["name"], metadata["namespace"])
        except KubeError as error:
            log.warning("orphan sweep failed: %s", error)

    # -- health -----------------------------------------------------------------------------------

    async def check_permissions(self) -> None:
        namespaces: list[str | None] = list(self.config.watch_namespaces) or [None]
        checks = [
            (permission, verb, namespace)
            for permission in permissions.NAMESPACED
            for verb in permission.verbs
            for namespace in namespaces
        ]
        checks += [
            (permission, verb, None) for permission in permissions.CLUSTER for verb in permission.verbs
        ]
        checks += [
            (permission, verb, self.config.namespace)
            for permission in permissions.OWN_NAMESPACE
            for verb in permission.verbs
        ]
        answers = await asyncio.gather(
            *(
                self.kube.allowed(verb, item.group, item.resource, namespace)
                for item, verb, namespace in checks
            )
        )
        self.missing_permissions = [
            item.describe(verb, namespace)
            for (item, verb, namespace), allowed in zip(checks, answers, strict=True)
            if not allowed
        ]
        for missing in self.missing_permissions:
            log.error("the operator's identity may not %s", missing)
        self.permissions_checked = True

    def readiness(self) -> tuple[bool, str]:
        if not self.permissions_checked:
            return False, "checking permissions"
        if not self.watching.is_set():
            return False, "starting to watch"
        if self.missing_permissions:
            return False, "missing permissions: " + "; ".join(self.missing_permissions)
        return True, "ok"


def _connection_info(found: Credentials) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=found.ca_path,
        ca_data=found.ca_data,
        insecure=found.insecure,
        scheme="Bearer" if found.token else None,
        token=found.token,
        certificate_path=found.certificate_path,
        certificate_data=found.certificate_data,
        private_key_path=found.private_key_path,
        private_key_data=found.private_key_data,
    )


@kopf.on.startup()
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # our own Events say what matters; kopf's would echo every log line
    settings.watching.server_timeout = 300  # the API server closes the watch; we reconnect
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = 600  # reconnect a watch that went silent behind a proxy
    settings.networking.request_timeout = 60
    # Watch the SMD kind and the configured namespaces only: no listing of CRDs or namespaces, which the
    # chart does not grant (kopf would retry the 403s before it starts watching).
    settings.scanning.disabled = True
    # Stream only the operator's own Deployments from the API server, not every Deployment in the cluster.
    settings.watching.label_selectors["apps", "deployments"] = (
        f"app.kubernetes.io/managed-by={naming.MANAGED_BY}"
    )


@kopf.on.login()
def _login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    operator: Operator = memo["operator"]
    return _connection_info(operator.credentials())


# Both handlers are coroutines so that kopf runs them on the event loop, which owns the work queue
# (kopf runs plain functions in a thread pool).
@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def _smd_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator: Operator = memo["operator"]
    operator.on_smd_event(event.get("type"), event["object"])


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": naming.MANAGED_BY})
async def _deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator: Operator = memo["operator"]
    operator.on_deployment_event(event["object"])


async def run(
    config: OperatorConfig,
    *,
    kubeconfig: Path | None = None,
    clock: Clock = utc_now,
    http_port: int = 8080,
    stop: threading.Event | None = None,
    started: threading.Event | None = None,
) -> None:
    """Run until `stop` is set, or forever. The events let a test run the operator in a thread."""
    kube_config = load_config(kubeconfig)
    kube = Kube(kube_config)
    operator = Operator(config=config, kube=kube, credentials=credentials_source(kube_config), clock=clock)
    if started is not None:
        operator.watching = started
    server = HealthServer(operator.readiness)
    tasks = [asyncio.create_task(operator.worker()) for _ in range(config.workers)]
    tasks.append(asyncio.create_task(operator.resync()))
    try:
        await server.start(http_port)
        await operator.check_permissions()
        namespaces = list(config.watch_namespaces)
        await kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            memo=kopf.Memo(operator=operator),
            stop_flag=stop,
            ready_flag=operator.watching,
        )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        await kube.close()

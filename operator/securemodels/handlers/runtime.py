"""The running operator: kopf's watch of SMDs and the watch-fed caches feed a work queue; workers
reconcile; a resync loop re-checks everything once a period.

kopf's low-level `on.event` handler stores nothing on the SMD (no annotations, no finalizer), so the
user's object stays exactly as applied (Argo CD sees no drift), deletion is never blocked by the operator
being down, and the reconcile stays level-based. Periodic resync replaces kopf timers, which would put a
finalizer on every SMD.

A change in a cache wakes only the SMDs it can affect: the owner of a child, the SMD a pod, policy or
Service could select, the accounts a binding or role could grant to (whose authorizer answers are
forgotten). After a pass repaired drift, the SMD's verdict stands until the next resync, so that the
Fail is seen (status, metric, Event) before the repair is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from securemodels import metrics
from securemodels.api import v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired import canonical, naming
from securemodels.handlers import permissions
from securemodels.handlers.keys import OperatorKeys
from securemodels.handlers.leadership import ElectionThread, Elector
from securemodels.handlers.reconcile import Clock, Reconciler
from securemodels.handlers.reports import ReportWriter
from securemodels.k8s import cache, read
from securemodels.k8s.access import AccessReviews
from securemodels.k8s.client import Credentials, Kube, KubeError, credentials_source, load_config
from securemodels.server import HealthServer
from securemodels.workqueue import BEHIND, FIRST, WorkQueue

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0
ORPHAN_SWEEP_EVERY = 10  # resync periods
FULL_RESYNC_EVERY = 10  # resync periods: every SMD is judged afresh, changed or not
CONFLICT_RETRY = 0.2  # seconds
# Groups every service account is in: a binding to them could grant to any model.
_EVERY_ACCOUNT = ("system:serviceaccounts", "system:authenticated")
_OWNED_KINDS = ("Deployment", "ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim", "Role")


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
    leading: asyncio.Event = field(default_factory=asyncio.Event)  # only the leader reconciles
    holding: set[str] = field(default_factory=set)  # verdicts standing until the next resync
    backing_off: dict[str, float] = field(default_factory=dict)  # refused SMDs: when to try again
    missing_permissions: list[str] = field(default_factory=list)
    # Seconds the API server has been silent for, and how long is too long (leader election asks it
    # every retry period): readiness follows an outage while it lasts.
    silent_for: Callable[[], float] = lambda: 0.0
    silence_limit: float = float("inf")
    permissions_checked: bool = False
    watching: threading.Event = field(default_factory=threading.Event)
    # Changes the caches have seen, per namespace ("" for cluster-scoped kinds and the operator's own
    # namespace; read.change_scope), and what an SMD's last pass was judged on: a resync skips an SMD
    # none of whose inputs can have changed since, but every FULL_RESYNC_EVERY-th one.
    changes: Counter[str] = field(default_factory=Counter)
    judged_on: dict[str, tuple[object, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.caches = read.Caches(self.kube, self.config, self.on_change)
        self.keys = OperatorKeys(self.kube, self.caches, self.config)
        self.reviews = AccessReviews(self.kube)
        self.reconciler = Reconciler(self.kube, self.caches, self.config, self.clock, self.keys, self.reviews)
        self.reports = ReportWriter(
            self.kube,
            self.config,
            self.bodies,
            self.caches["Namespace"],
            self.caches["Secret"],
            self.keys.stamp_key,
            self.leading,
            self.clock,
        )
        self._by_uid: dict[str, str] = {}
        self._by_namespace: dict[str, set[str]] = defaultdict(set)

    # -- feeding the queue ------------------------------------------------------------------------

    def on_smd_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key = f"{metadata['namespace']}/{metadata['name']}"
        known = self.bodies.get(key)
        if event_type == "DELETED":
            self.bodies.pop(key, None)
            self._by_namespace[metadata["namespace"]].discard(key)
        else:
            self.bodies[key] = cache.compact(cache.without_managed_fields(dict(body)))
            self.uids[key] = metadata["uid"]
            self._by_uid[metadata["uid"]] = key
            self._by_namespace[metadata["namespace"]].add(key)
        metrics.MANAGED_RESOURCES.set(len(self.bodies))
        self.reports.changed(metadata["namespace"])  # its status, or its coming or going
        # Our own status writes come back as events too; only a new spec (generation) is news.
        unchanged_spec = (
            event_type != "DELETED"
            and known is not None
            and known["metadata"]["uid"] == metadata["uid"]
            and known["metadata"].get("generation") == metadata.get("generation")
        )
        if not unchanged_spec:
            self.holding.discard(key)
            self.backing_off.pop(key, None)
            self.queue.add(key)

    def on_change(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A cached object changed: wake the SMDs it can affect, unless it is the echo of the operator's
        own write (which arrives while, or after, the reconcile that made it)."""
        scope = read.change_scope(kind, old, new, self.config.namespace)
        if scope is not None:
            self.changes[scope] += 1
        if new is not None:
            metadata = new["metadata"]
            written = (kind, str(metadata.get("namespace") or ""), str(metadata["name"]))
            if self.reconciler.echoes.get(written) == metadata.get("resourceVersion"):
                del self.reconciler.echoes[written]
                return
        affected = {key for item in (old, new) if item is not None for key in self._affected(kind, item)}
        # A change that concerns one SMD (its child, its pod, a binding to its account) goes before
        # one that wakes many: tampering is not kept waiting behind a fleet judged again.
        lane = FIRST if len(affected) == 1 else BEHIND
        for key in affected:
            if key in self.bodies and key not in self.holding and key not in self.backing_off:
                self.queue.add(key, lane)

    def _in_namespace(self, namespace: str) -> set[str]:
        return set(self._by_namespace.get(namespace, ()))

    def _affected(self, kind: str, item: Mapping[str, Any]) -> set[str]:
        metadata = item["metadata"]
        namespace = str(metadata.get("namespace") or "")
        found = {self._by_uid[uid] for uid in read.owner_uids(item) if uid in self._by_uid}
        if namespace == self.config.namespace and kind in ("Secret", "ConfigMap") and not found:
            return set(self.bodies)  # the CA, its ledger or the template key
        if kind in ("Service", "NetworkPolicy"):
            for value in read.selected(kind, item):
                instance = value.split("/", 1)[1]
                found |= self._in_namespace(namespace) if instance == read.ANY else {value}
        elif kind == "Pod":
            found |= {f"{namespace}/{name}" for name in read.pod_model_names(item)}
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            found |= self._granted(read.subjects(item), namespace)
        elif kind == "Role":
            self.reviews.forget(namespace)
            found |= self._in_namespace(namespace)
        elif kind == "ClusterRole":
            role = f"ClusterRole/{metadata['name']}"
            for binding_kind in ("RoleBinding", "ClusterRoleBinding"):
                for binding in self.caches[binding_kind].indexed(read.ROLE, role):
                    found |= self._granted(
                        read.subjects(binding), str(binding["metadata"].get("namespace") or "")
                    )
        elif kind == "Namespace":
            found |= {
                key for key, body in self.bodies.items() if metadata["name"] in _client_namespaces(body)
            }
        elif kind == "StorageClass":
            found |= {key for key, body in self.bodies.items() if _storage_class(body) == metadata["name"]}
        return found

    def _granted(self, subjects: Iterable[str], namespace: str) -> set[str]:
        """The SMDs whose accounts a binding's subjects reach; their authorizer answers are forgotten."""
        found: set[str] = set()
        for subject in subjects:
            kind, _, name = subject.partition(":")
            if kind == "sa":
                account_namespace, _, account = name.partition("/")
                found.add(f"{account_namespace}/{account}")
                self.reviews.forget(account_namespace, account)
            elif kind == "user" and name.startswith("system:serviceaccount:"):
                account_namespace, _, account = name.removeprefix("system:serviceaccount:").partition(":")
                found.add(f"{account_namespace}/{account}")
                self.reviews.forget(account_namespace, account)
            elif kind == "group" and name in _EVERY_ACCOUNT:
                self.reviews.forget()
                return set(self.bodies)
            elif kind == "group" and name.startswith("system:serviceaccounts:"):
                account_namespace = name.removeprefix("system:serviceaccounts:")
                self.reviews.forget(account_namespace)
                found |= self._in_namespace(account_namespace)
        return found

    def start_leading(self) -> None:
        """This replica now holds the Lease: everything is looked at afresh."""
        self.leading.set()
        self.holding.clear()
        for key in list(self.bodies):
            self.queue.add(key, BEHIND)

    def stop_leading(self) -> None:
        """Another replica may take over: stop taking work (writes are refused from now on anyway), and
        stop reporting verdicts, which the new leader reports from now on."""
        self.leading.clear()
        for key in self.bodies:
            namespace, name = key.split("/", 1)
            metrics.forget(namespace, name)

    async def resync(self) -> None:
        """Re-check every SMD each period; sweep orphans at the first pass and every tenth after."""
        for rounds in itertools.count():
            await asyncio.sleep(self.config.resync_seconds)
            if self.missing_permissions:  # someone may have fixed the RBAC: readiness follows
                with contextlib.suppress(KubeError):
                    await self.check_permissions()
            if not self.leading.is_set():
                continue  # a standby keeps its caches warm, and nothing else
            self.holding.clear()
            now = asyncio.get_running_loop().time()
            full = rounds % FULL_RESYNC_EVERY == 0
            for key in list(self.bodies):
                if not full and self.judged_on.get(key) == self._inputs(key):
                    continue
                if self.backing_off.get(key, now) <= now:
                    self.backing_off.pop(key, None)
                    self.queue.add(key, BEHIND)
            try:
                if rounds % ORPHAN_SWEEP_EVERY == 0:
                    await self._sweep_orphans()
            except Exception:  # the loop must outlive any one round
                log.exception("resync housekeeping failed; trying again next period")

    # -- working it off ---------------------------------------------------------------------------

    async def worker(self) -> None:
        await self.caches.wait_synced()
        while True:
            await self.leading.wait()
            key = await self.queue.get()
            held = False
            try:
                held = await self._process(key)
            finally:
                # After a repair the verdict stands until the next resync: the echoes of the repair's
                # own writes, which may arrive before the writes return, must not cut it short.
                self.queue.done(key, drop_news=held)

    def _inputs(self, key: str) -> tuple[object, ...]:
        """What a pass of the SMD is judged on, as far as the caches tell: the SMD itself, and the
        changes seen in its namespace, in its clients' namespaces, and cluster-wide."""
        body = self.bodies.get(key) or {}
        namespaces = sorted({key.split("/", 1)[0], *_client_namespaces(body)})
        return (
            body.get("metadata", {}).get("resourceVersion"),
            self.changes[""],
            *(self.changes[namespace] for namespace in namespaces),
        )

    async def _process(self, key: str) -> bool:
        """Reconcile one key; True when its verdict is to stand until the next resync."""
        body = self.bodies.get(key)
        inputs = self._inputs(key)
        self.judged_on.pop(key, None)
        try:
            if body is None:
                await self._forget(key)
                return False
            outcome = await self.reconciler.reconcile(body)
        except KubeError as error:
            if error.code == 409:
                # An object changed between the read and the write (a controller's status update,
                # mostly): the watch brings the new version; look again soon, without backing off.
                log.info("reconcile of %s raced a change (%s); looking again", key, error)
                self.queue.add_after(key, CONFLICT_RETRY)
                return False
            self._retry(key, "api" if error.transient else f"http{error.code}", error)
            return False
        except Exception as error:
            log.exception("reconcile of %s failed unexpectedly", key)
            self._retry(key, "internal", error)
            return False
        self.failures.pop(key, None)
        self.queue.forget(key)  # retries still pending are moot, and must not cut a held verdict short
        if outcome.phase in ("Ready", "Degraded", "Quarantined") and not outcome.unwatched:
            # Settled: only a change of its inputs, or a due renewal (queued below), changes the verdict.
            # Blocked and rolling SMDs, and those judged on objects no cache watches, are looked at
            # every period (missing references and signing ConfigMaps send no event).
            self.judged_on[key] = inputs
        if outcome.repaired:
            self.holding.add(key)
        current = self.bodies.get(key)
        if current is not None and current["metadata"]["uid"] == body["metadata"]["uid"]:
            # What we just wrote; the watch echoes it later, and a requeue must not act on older status.
            current["status"] = outcome.status
        if outcome.requeue_after is not None and outcome.phase != "Blocked":
            self.queue.add_after(key, outcome.requeue_after)  # a renewal or a rollout, on time
        elif outcome.requeue_after is not None:
            # A refused SMD waits for its backoff, not for the next resync or event.
            self.backing_off[key] = asyncio.get_running_loop().time() + outcome.requeue_after
            self.queue.add_after(key, outcome.requeue_after)
        return outcome.repaired

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
        self.holding.discard(key)
        self.backing_off.pop(key, None)
        self.judged_on.pop(key, None)
        metrics.forget(namespace, name)
        uid = self.uids.get(key)
        self.reconciler.forget(key)
        if uid is not None:
            key_of_stamps = await self.keys.stamp_key()
            for item in read.client_deliveries(self.caches, uid):
                if canonical.object_intact(key_of_stamps, uid, item["kind"], item):
                    await self._delete(item)
            self._by_uid.pop(uid, None)
        self.uids.pop(key, None)  # only now: a failed deletion is retried with the uid
        self.failures.pop(key, None)

    async def _delete(self, item: Mapping[str, Any]) -> None:
        metadata = item["metadata"]
        try:
            await self.kube.delete(
                item["kind"],
                metadata["name"],
                metadata.get("namespace"),
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            )
        except KubeError as error:
            if error.code != 409:
                raise
            log.info(
                "%s %s/%s changed before it could be removed; left alone",
                item["kind"],
                metadata.get("namespace"),
                metadata["name"],
            )

    async def _sweep_orphans(self) -> None:
        """Client Secrets and CA bundles whose SMD was deleted while the operator was not running."""
        try:
            for kind in ("Secret", "ConfigMap"):
                for item in self.caches[kind].all():
                    labels = item["metadata"].get("labels") or {}
                    if labels.get(naming.COMPONENT_LABEL) != naming.CLIENT_COMPONENT:
                        continue
                    name, namespace, uid = (
                        labels.get(naming.OWNER_NAME_LABEL),
                        labels.get(naming.OWNER_NAMESPACE_LABEL),
                        labels.get(naming.OWNER_UID_LABEL),
                    )
                    if not name or not namespace or not uid or self.uids.get(f"{namespace}/{name}") == uid:
                        continue  # not labelled by us in full, or its SMD is known
                    if not canonical.object_intact(await self.keys.stamp_key(), uid, item["kind"], item):
                        continue  # labels anyone could write; the stamp only the operator
                    owner = await self.kube.get(v1alpha1.KIND, name, namespace)
                    if owner is None or owner["metadata"]["uid"] != uid:
                        metadata = item["metadata"]
                        log.info(
                            "removing orphaned %s %s/%s",
                            item["kind"],
                            metadata["namespace"],
                            metadata["name"],
                        )
                        await self._delete(item)
        except KubeError as error:
            log.warning("orphan sweep failed: %s", error)

    # -- health -----------------------------------------------------------------------------------

    async def check_permissions(self) -> None:
        namespaces: list[str | None] = list(self.config.watch_namespaces) or [None]
        own: tuple[permissions.Permission, ...] = (
            permissions.OWN_NAMESPACE if self.config.watch_namespaces else ()
        )
        election = self.config.leader_election
        own += permissions.leader_election(election.lease_name) if election.enabled else ()
        namespaced = permissions.NAMESPACED + permissions.compliance_reports(self.config.policy_reports)
        checks: list[tuple[permissions.Permission, str, str | None, str | None]] = [
            (permission, verb, namespace, None)
            for permission in namespaced
            for verb in permission.verbs
            for namespace in namespaces
        ]
        checks += [
            (permission, verb, None, None) for permission in permissions.CLUSTER for verb in permission.verbs
        ]
        checks += [
            (permission, verb, self.config.namespace, name)
            for permission in own
            for verb in permission.verbs
            for name in permission.names or (None,)
        ]
        answers = await asyncio.gather(
            *(
                self.kube.allowed(verb, item.group, item.resource, namespace, name)
                for item, verb, namespace, name in checks
            )
        )
        self.missing_permissions = [
            item.describe(verb, namespace, name)
            for (item, verb, namespace, name), allowed in zip(checks, answers, strict=True)
            if not allowed
        ]
        for missing in self.missing_permissions:
            log.error("the operator's identity may not %s", missing)
        self.permissions_checked = True

    def readiness(self) -> tuple[bool, str]:
        if not self.permissions_checked:
            return False, "checking permissions"
        if self.missing_permissions:
            return False, "missing permissions: " + "; ".join(self.missing_permissions)
        if self.silent_for() > self.silence_limit:
            return False, f"the API server has not answered for {self.silent_for():.0f}s"
        problems = self.caches.problems()
        if not self.caches.synced or problems:
            # A cache whose watch fails goes stale: not ready until it follows again.
            detail = "; ".join(problems)
            if self.caches.synced:
                return False, f"watching failed: {detail}"
            return False, "filling caches" + (f": {detail}" if detail else "")
        if not self.watching.is_set():
            return False, "starting to watch"
        return True, "ok (leading)" if self.leading.is_set() else "ok (standby)"


def identity() -> str:
    """This replica's name in the Lease: its pod's name (the chart sets POD_NAME), else host and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _field(value: object, name: str) -> object:
    """A field of a stored spec that may not match the API at all (it bypassed the schema)."""
    return value.get(name) if isinstance(value, Mapping) else None


def _client_namespaces(body: Mapping[str, Any]) -> set[str]:
    clients = _field(_field(body.get("spec"), "mtls"), "clients")
    if not isinstance(clients, list):
        return set()
    return {str(client.get("namespace")) for client in clients if isinstance(client, Mapping)}


def _storage_class(body: Mapping[str, Any]) -> str | None:
    found = _field(_field(body.get("spec"), "storage"), "storageClassName")
    return str(found) if found is not None else None


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


@kopf.on.login()
def _login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    operator: Operator = memo["operator"]
    return _connection_info(operator.credentials())


# A coroutine, so that kopf runs it on the event loop, which owns the work queue (kopf runs plain
# functions in a thread pool).
@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def _smd_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator: Operator = memo["operator"]
    operator.on_smd_event(event.get("type"), event["object"])


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
    metrics.OPERATOR_READY.set_function(lambda: float(operator.readiness()[0]))
    tasks = operator.caches.start()
    election = config.leader_election
    election_thread: ElectionThread | None = None
    if election.enabled:
        main = asyncio.get_running_loop()

        def started_leading() -> None:
            main.call_soon_threadsafe(operator.start_leading)

        def stopped_leading() -> None:
            main.call_soon_threadsafe(operator.stop_leading)

        lease_kube = Kube(kube_config)
        elector = Elector(
            lease_kube, election, config.namespace, identity(), started_leading, stopped_leading
        )
        kube.may_write = elector.may_write
        operator.silent_for, operator.silence_limit = elector.silent_for, election.renew_deadline_seconds
        election_thread = ElectionThread(elector, lease_kube)
        election_thread.start()
    else:
        operator.start_leading()
        metrics.LEADER.set(1)
    tasks += [asyncio.create_task(operator.worker()) for _ in range(config.workers)]
    tasks.append(asyncio.create_task(operator.resync()))
    tasks.append(asyncio.create_task(operator.reports.run(), name="compliance reports"))
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
        if election_thread is not None:
            await election_thread.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        await kube.close()

"""One level-based reconcile of one SMD: read, decide (pure), write what differs, report.

Every pass computes the whole desired state from the spec and compares it with what is live, so it does
not matter which event triggered it, or whether the previous pass was interrupted half-way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from securemodels import desired, metrics
from securemodels.api import v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired import certificates, naming
from securemodels.desired import status as status_rules
from securemodels.desired.compare import carries
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed
from securemodels.handlers.ca import CAStore
from securemodels.k8s import events, read
from securemodels.k8s.client import Kube, KubeError
from securemodels.pki import CertificateInfo

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Outcome:
    """What the worker should do next: look again after `requeue_after` seconds (None: at resync)."""

    phase: str
    status: dict[str, Any]
    requeue_after: float | None = None


def owner_of(body: Mapping[str, Any]) -> naming.Owner:
    metadata = body["metadata"]
    return naming.Owner(
        name=metadata["name"],
        namespace=metadata["namespace"],
        uid=metadata["uid"],
        generation=int(metadata.get("generation", 0)),
    )


class Reconciler:
    def __init__(self, kube: Kube, config: OperatorConfig, clock: Clock) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.ca = CAStore(kube, config)
        # A binding that grants the model's account permissions shows up within half a resync.
        self.cluster_role_bindings = read.SharedList("ClusterRoleBinding", ttl=config.resync_seconds / 2)

    async def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        started = time.monotonic()
        try:
            return await self._reconcile(body)
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    async def _reconcile(self, body: Mapping[str, Any]) -> Outcome:
        owner = owner_of(body)
        previous: dict[str, Any] = dict(body.get("status") or {})
        if body["metadata"].get("deletionTimestamp"):
            # Going away (someone else's finalizer holds it): restoring its children would fight the deletion.
            return Outcome(str(previous.get("phase", "Blocked")), previous)
        now = self.clock()
        try:
            spec = v1alpha1.SecureModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            return await self._blocked_without_spec(owner, previous, error, now)

        context = Context(owner=owner, spec=spec, config=self.config, now=now)
        context = replace(
            context, facts=await read.facts(self.kube, context, desired.referenced_objects(context))
        )
        observed, tls_secret = await read.observe(self.kube, owner, self.cluster_role_bindings)
        blockers = desired.preflight(context, observed)
        notes: list[str] = []
        warnings: list[str] = []
        judged, drifted = observed, False
        next_renewal: datetime | None = None
        if not blockers:
            try:
                ca = await self.ca.current(now)
                plan = certificates.plan(
                    context, ca, read.key_pair(tls_secret), await read.client_secrets(self.kube, context)
                )
                notes += plan.issued
                warnings += plan.replaced
                next_renewal = plan.next_renewal
                want = desired.build(context, plan.server, plan.clients)
                # Unchanged spec and already realised: a difference now is someone else's doing.
                steady = (
                    previous.get("observedGeneration") == owner.generation
                    and previous.get("phase") != "Blocked"
                )
                changed, drifted = await self._apply_owned(owner, want.owned, observed, tls_secret, steady)
                changed |= await self._apply_remote(owner, want.remote)
                changed |= await self._prune(owner, want.owned, observed)
                if changed and not drifted:
                    judged, _ = await read.observe(self.kube, owner, self.cluster_role_bindings)
            except KubeError as error:
                if error.code != 422:
                    raise
                # The API server refused an object we built from this spec: report it, do not retry hot.
                blockers = (Blocker("RefusedByAPIServer", str(error)),)

        results = status_rules.judge(context, judged)
        summary = status_rules.summarize(context, results, blockers, judged.deployment)
        new_status = status_rules.build_status(
            context, results, summary, previous, judged.deployment, judged.server_certificate
        )
        await self._write_status(owner, previous, new_status)
        for event in status_rules.transitions(previous, new_status):
            await events.post(
                self.kube, events.about_smd(owner), event.type, event.reason, event.message, now
            )
        for note in notes:
            await events.post(self.kube, events.about_smd(owner), "Normal", "CertificateIssued", note, now)
        for warning in warnings:
            await events.post(
                self.kube, events.about_smd(owner), "Warning", "CertificateReplaced", warning, now
            )
        if drifted:
            log.warning("%s/%s: drift corrected", owner.namespace, owner.name)
        _export_metrics(owner, results, new_status, judged.server_certificate, next_renewal)
        requeue = None
        if next_renewal is not None and next_renewal > now:
            # A due date in the past was not renewable yet (a leaf is cut at its CA's expiry): the next
            # CA takes over at a resync, so do not spin on it.
            requeue = (next_renewal - now).total_seconds()
        return Outcome(summary.phase, new_status, requeue)

    async def _apply_owned(
        self,
        owner: naming.Owner,
        manifests: tuple[Manifest, ...],
        observed: Observed,
        tls_secret: Manifest | None,
        steady: bool,
    ) -> tuple[bool, bool]:
        """Apply what differs. Returns (anything written, drift found).

        Drift: with the spec unchanged since the last pass, an object is missing, or carries our stamp
        but not our fields: someone else deleted or edited it.
        """
        live = _live_children(observed, tls_secret)
        changed = drifted = False
        for manifest in manifests:
            key = (manifest["kind"], manifest["metadata"]["name"])
            current = live.get(key)
            if current is not None and carries(current, manifest):
                continue
            if steady and (
                current is None or desired.desired_hash(current) == desired.desired_hash(manifest)
            ):
                drifted = True
                metrics.DRIFT_CORRECTIONS.labels(kind=key[0]).inc()
                what = "was deleted" if current is None else "was changed"
                log.warning(
                    "%s/%s: %s %s %s outside the operator; restoring it",
                    owner.namespace,
                    owner.name,
                    *key,
                    what,
                )
            await self.kube.apply(manifest)
            changed = True
        return changed, drifted

    async def _apply_remote(self, owner: naming.Owner, manifests: tuple[Manifest, ...]) -> bool:
        wanted = {
            (item["kind"], item["metadata"]["namespace"], item["metadata"]["name"]): item
            for item in manifests
        }
        changed = False
        existing = await read.remote_objects(self.kube, self.config.watch_namespaces, owner.uid)
        live = {
            (item["kind"], item["metadata"]["namespace"], item["metadata"]["name"]): item for item in existing
        }
        for key, manifest in wanted.items():
            if key in live and carries(live[key], manifest):
                continue
            await self.kube.apply(manifest)
            changed = True
        for key in live.keys() - wanted.keys():
            kind, namespace, name = key
            log.info(
                "%s/%s: removing %s %s/%s (client no longer declared)",
                owner.namespace,
                owner.name,
                kind,
                namespace,
                name,
            )
            await self.kube.delete(kind, name, namespace)
            changed = True
        return changed

    async def _prune(self, owner: naming.Owner, manifests: tuple[Manifest, ...], observed: Observed) -> bool:
        wanted = {(item["kind"], item["metadata"]["name"]) for item in manifests}
        owned = [
            *observed.roles,
            *(binding for binding in observed.role_bindings if read.owned_by(binding, owner)),
            *([observed.pvc] if observed.pvc else []),
        ]
        changed = False
        for item in owned:
            key = (item["kind"], item["metadata"]["name"])
            if key not in wanted:
                log.info("%s/%s: removing %s %s (no longer in the spec)", owner.namespace, owner.name, *key)
                await self.kube.delete(key[0], key[1], owner.namespace)
                changed = True
        return changed

    async def _write_status(self, owner: naming.Owner, previous: dict[str, Any], new: dict[str, Any]) -> None:
        if previous == new:
            return
        patch = {**{key: None for key in previous.keys() - new.keys()}, **new}
        await self.kube.patch_status(owner.name, owner.namespace, patch)

    async def _blocked_without_spec(
        self, owner: naming.Owner, previous: dict[str, Any], error: ValidationError, now: datetime
    ) -> Outcome:
        """The stored object does not match the API (it bypassed the schema): report, touch nothing."""
        message = v1alpha1.describe(error)
        new = status_rules.invalid_spec_status(previous, message, owner.generation, now)
        if new != previous:
            await self._write_status(owner, previous, new)
            await events.post(self.kube, events.about_smd(owner), "Warning", "InvalidSpec", message, now)
        return Outcome("Blocked", new)


def _live_children(observed: Observed, tls_secret: Manifest | None) -> dict[tuple[str, str], Manifest]:
    items = [
        observed.deployment,
        observed.service,
        observed.service_account,
        observed.sidecar_config,
        tls_secret,
        observed.pvc,
        *observed.network_policies,
        *observed.roles,
        *observed.role_bindings,
    ]
    return {(item["kind"], item["metadata"]["name"]): item for item in items if item is not None}


def _export_metrics(
    owner: naming.Owner,
    results: list[ControlResult],
    status: Mapping[str, Any],
    certificate: CertificateInfo | None,
    next_renewal: datetime | None,
) -> None:
    namespace, name = owner.namespace, owner.name
    kept: set[tuple[str, ...]] = set()
    for result in results:
        metrics.COMPLIANCE_STATUS.labels(namespace, name, result.name).set(
            1 if result.status == "Pass" else 0
        )
        kept.add((namespace, name, result.name))
        for weakening in result.weakenings:
            metrics.CONTROL_WEAKENED.labels(namespace, name, result.name, weakening).set(1)
            kept.add((namespace, name, result.name, weakening))
    metrics.COMPLIANT.labels(namespace, name).set(1 if status.get("compliant") else 0)
    metrics.READY.labels(namespace, name).set(1 if status.get("phase") == "Ready" else 0)
    kept.add((namespace, name))
    if certificate is not None:
        metrics.CERTIFICATE_EXPIRY.labels(namespace, name).set(certificate.not_after.timestamp())
    if next_renewal is not None:
        metrics.CERTIFICATE_RENEWAL.labels(namespace, name).set(next_renewal.timestamp())
    metrics.forget(namespace, name, keep=frozenset(kept))

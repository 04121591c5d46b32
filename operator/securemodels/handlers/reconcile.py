"""One level-based reconcile of one SMD: read (from the caches), decide (pure), write what differs,
judge, report.

The order is what keeps the promises. Nothing is written while anything blocks the SMD: a name someone
else holds, a preflight of any control, a missing reference, or a refusal by the API server of any object
it would write (every write is tried as a server-side dry run first). Objects are created with POST and
replaced whole with PUT at the version that was judged, so nothing is adopted and nothing changed
meanwhile is overwritten. Each write carries the stamp of the canonical form the dry run showed
(desired/canonical.py), so drift, whatever anyone else added, removed or changed, is found from the live
object alone, also after a restart, and is removed and reported until the next resync sees it repaired.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client import Gauge
from pydantic import ValidationError

from securemodels import desired, metrics
from securemodels.api import v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired import canonical, certificates, judging, naming, workload
from securemodels.desired import status as status_rules
from securemodels.desired.controls import mtls, network, storage, weights
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed, Permissions
from securemodels.desired.naming import ChildRef
from securemodels.handlers.keys import OperatorKeys
from securemodels.k8s import cache, events, read
from securemodels.k8s.access import AccessReviews
from securemodels.k8s.cache import without_managed_fields
from securemodels.k8s.client import Kube, KubeError
from securemodels.pki import CertificateInfo, KeyPair

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
REFUSED = "RefusedByAPIServer"
NAME_TAKEN = "NameTaken"
REFERENCE_NOT_FOUND = "ReferenceNotFound"
# A Blocked SMD whose objects the API server refused is tried again this much later, doubling up to the
# cap: the refusal may have been lifted (a quota raised, a webhook fixed), but retrying costs requests.
MAX_REFUSAL_BACKOFF = 600.0


@dataclass(frozen=True)
class Outcome:
    """What the worker should do next: look again after `requeue_after` seconds (None: at resync).
    `repaired`: drift was put right, and its verdict should stand until the next resync.
    `unwatched`: the verdict rests on objects asked of the API server, which no cache watches (the
    signing ConfigMap, names someone else holds), so no resync may skip it."""

    phase: str
    status: dict[str, Any]
    requeue_after: float | None = None
    repaired: bool = False
    unwatched: bool = False


@dataclass(frozen=True)
class _Written:
    """A status the operator wrote, packed (the next pass announces transitions from it), and digests
    of it and of what the API server kept of it: held for every SMD, so held small."""

    packed: bytes
    written: bytes
    kept: bytes

    def status(self) -> dict[str, Any]:
        return cache.unpack(self.packed)

    def holds(self, new: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
        """Whether `new` is what was written and `stored` what the server kept of it."""
        return (self.written, self.kept) == (_digest(new), _digest(stored))


def _digest(value: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).digest()


class Taken(Exception):
    """An object the SMD would create exists and is someone else's."""

    def __init__(self, ref: ChildRef) -> None:
        super().__init__(str(ref))
        self.ref = ref


class Refused(Exception):
    """The API server refused an object the operator built: the SMD is Blocked with its message."""

    def __init__(self, ref: ChildRef, error: KubeError) -> None:
        super().__init__(f"{ref.kind} {ref.name}: {error}")
        self.error = error


def owner_of(body: Mapping[str, Any]) -> naming.Owner:
    metadata = body["metadata"]
    return naming.Owner(
        name=str(metadata["name"]),
        namespace=str(metadata["namespace"]),
        uid=str(metadata["uid"]),
        generation=int(metadata.get("generation") or 0),
    )


@dataclass
class _Write:
    ref: ChildRef
    manifest: Manifest  # what to send: a whole object
    create: bool
    drift: tuple[str, ...] = ()  # what someone else had changed, when that is why it is written
    # Someone made the operator's ConfigMap or Secret immutable: no update is possible, so the judged
    # object is deleted (with preconditions) and created again.
    recreate: Manifest | None = None


@dataclass
class _Pending:
    """Certificates issued for an SMD whose objects were not written yet: reused, so that a refused SMD
    costs no new key per attempt, and announced once they are delivered."""

    server: KeyPair | None = None
    clients: dict[str, KeyPair] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (Event type, message)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        caches: read.Caches,
        config: OperatorConfig,
        clock: Clock,
        keys: OperatorKeys,
        reviews: AccessReviews,
    ) -> None:
        self.kube, self.caches, self.config, self.clock = kube, caches, config, clock
        self.keys, self.reviews = keys, reviews
        # Names found held by someone else although the caches do not show them (objects without the
        # operator's label): asked again at each pass, until they are free.
        self._taken: dict[str, set[ChildRef]] = {}
        self._references: dict[str, tuple[int, tuple[str, ...]]] = {}  # key -> (generation, missing)
        self._refusals: dict[str, tuple[int, int]] = {}  # key -> (generation, attempts)
        self._pending: dict[str, _Pending] = {}
        # The status last written, and what the API server kept of it.
        self._written: dict[str, _Written] = {}
        # The resourceVersion of each object this reconciler wrote last: its watch event is an echo.
        self.echoes: dict[tuple[str, str, str], str] = {}

    def forget(self, key: str) -> None:
        for store in (self._taken, self._references, self._refusals, self._pending, self._written):
            store.pop(key, None)

    async def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        started = time.monotonic()
        try:
            return await self._reconcile(body)
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    # -- the steps ---------------------------------------------------------------------------------

    async def _reconcile(self, body: Mapping[str, Any]) -> Outcome:
        owner = owner_of(body)
        stored = dict(body.get("status") or {}) if isinstance(body.get("status"), Mapping) else {}
        previous = status_rules.parse_status(stored)
        if body["metadata"].get("deletionTimestamp"):
            # Going away (someone else's finalizer holds it): restoring its children would fight the deletion.
            return Outcome(previous.phase or "Blocked", stored)
        now = self.clock()
        problem = v1alpha1.name_problem(owner.name)
        try:
            spec = v1alpha1.SecureModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            problem = "; ".join(item for item in (problem, v1alpha1.describe(error)) if item)
        if problem:
            return await self._invalid(owner, stored, previous, problem, now)

        context = Context(
            owner=owner, spec=spec, config=self.config, now=now, stamp_key=await self.keys.stamp_key()
        )
        missing = await self._missing_references(context, previous)
        context = replace(context, facts=read.facts(self.caches, context, missing))
        trust = await read.signing_config_map(self.kube, context)
        context = replace(context, facts=replace(context.facts, signing_config_map=trust))
        live = read.observe(self.caches, context)
        live = replace(live, taken=tuple(sorted({*live.taken, *await self._still_taken(context)})))
        outcome = await self._decide(context, stored, previous, live)
        return replace(outcome, unwatched=trust is not None or bool(live.taken))

    async def _decide(
        self,
        context: Context,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        live: Observed,
    ) -> Outcome:
        owner, spec = context.owner, context.spec
        blockers = self._blockers(context, live)
        if blockers and spec.quarantine is None:
            return await self._blocked(context, stored, previous, live, blockers)
        try:
            if spec.quarantine is not None:
                return await self._quarantined(context, stored, previous, live)
            return await self._realise(context, stored, previous, live)
        except Taken as taken:
            await self._taken_now(context, taken.ref)
            live = replace(live, taken=tuple(sorted({*live.taken, taken.ref})))
            return await self._blocked(context, stored, previous, live, self._blockers(context, live))
        except Refused as refusal:
            metrics.RECONCILE_ERRORS.labels(reason=f"http{refusal.error.code}").inc()
            generation, attempts = self._refusals.get(owner.key, (owner.generation, 0))
            attempts = attempts if generation == owner.generation else 0  # a new spec starts afresh
            self._refusals[owner.key] = (owner.generation, attempts + 1)
            delay = min(MAX_REFUSAL_BACKOFF, self.config.resync_seconds * 2**attempts)
            log.warning("%s: %s; trying again in %.0fs", owner.key, refusal, delay)
            outcome = await self._blocked(context, stored, previous, live, (Blocker(REFUSED, str(refusal)),))
            return replace(outcome, requeue_after=delay)

    def _blockers(self, context: Context, live: Observed) -> tuple[Blocker, ...]:
        found: list[Blocker] = []
        if live.taken:
            found.append(
                Blocker(
                    NAME_TAKEN,
                    "objects with the names this SMD needs belong to someone else (left untouched): "
                    + ", ".join(str(ref) for ref in live.taken),
                )
            )
        found += judging.preflight(context, live)
        if context.facts.missing_references:
            found.append(
                Blocker(
                    REFERENCE_NOT_FOUND,
                    "spec.model refers to objects that do not exist: "
                    + ", ".join(context.facts.missing_references),
                )
            )
        return tuple(found)

    async def _still_taken(self, context: Context) -> set[ChildRef]:
        """The remembered names someone else holds, asked of the API server again."""
        found = set()
        for ref in sorted(self._taken.get(context.owner.key, ())):
            item = await self.kube.get(ref.kind, ref.name, ref.namespace)
            if item is not None and not canonical.owns(context.stamp_key, context.owner, ref, item):
                found.add(ref)
        if found:
            self._taken[context.owner.key] = found
        else:
            self._taken.pop(context.owner.key, None)
        return found

    async def _taken_now(self, context: Context, ref: ChildRef) -> None:
        """A create found the name in use. Someone else's: remembered, so the SMD stays Blocked without
        another try. The SMD's own (its label was removed, so the caches lost it): put back in the cache,
        to be judged and restored at the next pass."""
        item = await self.kube.get(ref.kind, ref.name, ref.namespace)
        if item is not None and canonical.owns(context.stamp_key, context.owner, ref, item):
            self.caches[ref.kind].offer(without_managed_fields(item))
            raise KubeError(409, f"{ref} exists without the operator's label; judging it again")
        if item is not None:
            self._taken.setdefault(context.owner.key, set()).add(ref)

    async def _missing_references(
        self, context: Context, previous: v1alpha1.SecureModelDeploymentStatus
    ) -> tuple[str, ...]:
        """Asked of the API server once per generation, and at every pass while the SMD is blocked by
        them (a Secret that appears is not watched)."""
        key, generation = context.owner.key, context.owner.generation
        known = self._references.get(key)
        if known is not None and known[0] == generation and not known[1]:
            return ()
        missing = await read.missing_references(self.kube, context, desired.referenced_objects(context))
        self._references[key] = (generation, missing)
        return missing

    async def _realise(
        self,
        context: Context,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        live: Observed,
    ) -> Outcome:
        owner, names = context.owner, context.names
        ca = await self.keys.ca(context.now)
        pending = self._pending.get(owner.key) or _Pending()
        server_now = read.key_pair(live.get(names.tls_secret)) or pending.server
        delivering = [
            client for client in context.spec.mtls.clients if context.facts.delivers_to(client.namespace)
        ]
        clients_now = {
            mtls.client_identity(client): read.key_pair(
                live.get(names.client_secrets[mtls.client_identity(client)])
            )
            or pending.clients.get(mtls.client_identity(client))
            for client in delivering
        }
        plan = certificates.plan(context, ca, server_now, clients_now)
        pending = _Pending(
            server=plan.server.pair,
            clients=dict(plan.clients),
            notes=[
                *pending.notes,
                *(("Normal", note) for note in plan.issued),
                *(("Warning", note) for note in plan.replaced),
            ],
        )
        self._pending[owner.key] = pending

        want = desired.build(context, plan.server, plan.clients).by_ref()
        writes, drift, canonical_template = await self._plan_writes(context, previous, live, want)
        deletes = self._plan_deletes(context, live, want)
        objects = await self._write_all(owner, live, writes)
        for ref, item in deletes:
            await self._delete(owner, ref, item)
            objects.pop(ref, None)
        self._refusals.pop(owner.key, None)
        self._pending.pop(owner.key, None)

        results, judged = await self._judge(
            context, replace(live, objects=objects), drift, canonical_template
        )
        summary = status_rules.summarize(context, results, (), objects.get(names.deployment))
        new = status_rules.build_status(
            context,
            results,
            summary,
            previous,
            objects.get(names.deployment),
            judged.server_certificate,
            weights.weights_status(context, judged),
        )
        # The metrics first: whoever reads the new status finds them saying the same.
        _export_metrics(owner, results, new.as_object(), judged.server_certificate, plan.next_renewal, judged)
        await self._report(context, stored, previous, new)
        for event_type, note in pending.notes:
            reason = "CertificateIssued" if event_type == "Normal" else "CertificateReplaced"
            await events.post(self.kube, events.about_smd(owner), event_type, reason, note, context.now)
        requeue = None
        if plan.next_renewal > context.now:
            # A due date in the past was not renewable yet (a leaf is cut at its CA's expiry): the next
            # CA takes over at a resync, so do not spin on it.
            requeue = (plan.next_renewal - context.now).total_seconds()
        return Outcome(summary.phase, new.as_object(), requeue, repaired=bool(drift))

    async def _permissions(self, owner: naming.Owner) -> Permissions | None:
        try:
            elsewhere = read.namespaces_naming_model(self.caches, owner)
            return await self.reviews.of(owner.namespace, owner.name, elsewhere)
        except KubeError as error:
            log.warning("%s: cannot ask the authorizer about the model's account: %s", owner.key, error)
            return None

    # -- deciding what to write -----------------------------------------------------------------------

    async def _dry_run(self, ref: ChildRef, request: Manifest, create: bool) -> Manifest:
        """What the server would make of the request: refused or not, and its canonical form."""
        try:
            found = await (self.kube.create if create else self.kube.replace)(request, dry_run=True)
        except KubeError as error:
            if create and error.code == 409:
                raise Taken(ref) from error
            if error.code == 409:
                await self._read_again(ref)
            raise self._refusal(ref, error) from error
        return without_managed_fields(found)

    async def _read_again(self, ref: ChildRef) -> None:
        """A replace found the object changed since the cached copy. The watch brings the new version of
        a labelled object, but not of one whose label was removed: read it, or the next pass would try
        the same stale copy again."""
        found = await self.kube.get(ref.kind, ref.name, ref.namespace)
        if found is None:
            self.caches[ref.kind].remove((ref.namespace, ref.name))
        else:
            self.caches[ref.kind].offer(without_managed_fields(found))

    def _refusal(self, ref: ChildRef, error: KubeError) -> Exception:
        if error.code == 0 or error.code in (404, 409, 429) or error.code >= 502:
            # The connection, throttling, a race (the object changed or went meanwhile): retried with
            # backoff, not a refusal.
            return error
        return Refused(ref, error)

    async def _plan_writes(
        self,
        context: Context,
        previous: v1alpha1.SecureModelDeploymentStatus,
        live: Observed,
        want: dict[ChildRef, Manifest],
    ) -> tuple[list[_Write], dict[ChildRef, tuple[str, ...]], Manifest | None]:
        """What to create or replace, each as a stamped request the server accepted in a dry run, and
        what someone else had changed or deleted (drift): a live object whose stamp does not match it,
        or a child gone from an SMD that was realised."""
        owner, key = context.owner, context.stamp_key
        # This spec was written out before (a Blocked SMD's was not): a child missing now was deleted.
        realised = previous.observed_generation == owner.generation and previous.phase in (
            "Ready",
            "Degraded",
            "Progressing",
            "Quarantined",
        )
        writes: list[_Write] = []
        drift: dict[ChildRef, tuple[str, ...]] = {}
        canonical_template: Manifest | None = None
        created_roles = {ref.name for ref in want if ref.kind == "Role" and live.get(ref) is None}
        for ref, manifest in want.items():
            current = live.get(ref)
            intact = current is not None and canonical.object_intact(key, owner.uid, ref.kind, current)
            intended = current is not None and desired.desired_hash(current) == desired.desired_hash(manifest)
            if ref.kind == "Deployment" and intact and intended and current is not None:
                canonical_template = current["spec"]["template"]["spec"]
            if intact and intended:
                continue
            if current is None and realised and not _delivery_pending(ref, owner, previous):
                drift[ref] = (judging.DELETED,)
            frozen = current is not None and ref.kind in ("ConfigMap", "Secret") and current.get("immutable")
            request = _replacing(manifest, current) if current is not None and not frozen else manifest
            if frozen:
                # The server would refuse any change, a dry run too; these kinds have no defaults to learn.
                shown = request
            elif ref.kind == "RoleBinding" and manifest["roleRef"]["name"] in created_roles:
                # Its Role does not exist until this pass writes it, and RBAC refuses a dry run of a
                # binding to a missing role: the Role's own dry run stands for both.
                shown = request
            else:
                shown = await self._dry_run(ref, request, create=current is None)
            if ref.kind == "Deployment":
                request, shown = workload.with_template_mac(request, key, owner.uid, shown)
                request, shown = _keep_restart(request, current), _keep_restart(shown, current)
                canonical_template = shown["spec"]["template"]["spec"]
            if current is not None and not intact:
                drift[ref] = tuple(canonical.object_differences(ref.kind, current, shown)) or (judging.STAMP,)
            request = canonical.with_object_mac(key, owner.uid, request, shown)
            writes.append(
                _Write(
                    ref,
                    request,
                    create=current is None or bool(frozen),
                    drift=drift.get(ref, ()),
                    recreate=current if frozen else None,
                )
            )
        return writes, drift, canonical_template

    def _plan_deletes(
        self, context: Context, live: Observed, want: dict[ChildRef, Manifest]
    ) -> list[tuple[ChildRef, Manifest]]:
        """Roles and bindings no longer declared, deliveries to clients no longer declared, and the
        volume only when the SMD asks for it."""
        names, key, uid = context.names, context.stamp_key, context.owner.uid
        candidates: list[tuple[ChildRef, Manifest]] = []
        for ref in [*names.roles.values(), *names.role_bindings.values()]:
            item = live.get(ref)
            if item is not None and ref not in want:
                candidates.append((ref, item))
        for item in read.client_deliveries(self.caches, uid):
            ref = desired.ref_of(item)
            if ref not in want and naming.owned_by(item, context.owner, ref):
                candidates.append((ref, item))
        claim = live.get(names.volume_claim)
        if claim is not None and storage.claim_is_removed(context):
            candidates.append((names.volume_claim, claim))
        # Only what carries the operator's stamp for this SMD is deleted: labels can be written by anyone
        # who may edit an object, a stamp only with the operator's key.
        return [(ref, item) for ref, item in candidates if canonical.object_intact(key, uid, ref.kind, item)]

    # -- writing ------------------------------------------------------------------------------------

    async def _write_all(
        self, owner: naming.Owner, live: Observed, writes: list[_Write]
    ) -> dict[ChildRef, Manifest]:
        """Send the writes in order; the live objects as they are afterwards."""
        objects = dict(live.objects)
        for write in writes:
            objects[write.ref] = await self._send(write)
            if write.drift:
                metrics.DRIFT_CORRECTIONS.labels(kind=write.ref.kind).inc()
                log.warning(
                    "%s: %s was changed outside the operator (%s); restored",
                    owner.key,
                    write.ref,
                    ", ".join(write.drift),
                )
        return objects

    async def _send(self, write: _Write) -> Manifest:
        if write.recreate is not None:
            metadata = write.recreate["metadata"]
            log.info("%s is immutable; deleting it to write it again", write.ref)
            await self.kube.delete(
                write.ref.kind,
                write.ref.name,
                write.ref.namespace,
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            )
        try:
            written = await (self.kube.create if write.create else self.kube.replace)(write.manifest)
        except KubeError as error:
            if error.code == 409 and write.create:
                raise Taken(write.ref) from error
            if error.code == 409:
                await self._read_again(write.ref)
            raise self._refusal(write.ref, error) from error
        stripped = without_managed_fields(written)
        self.caches[write.ref.kind].offer(stripped)
        self.echoes[(write.ref.kind, write.ref.namespace, write.ref.name)] = str(
            stripped["metadata"].get("resourceVersion")
        )
        return stripped

    async def _delete(self, owner: naming.Owner, ref: ChildRef, item: Manifest) -> None:
        """Only what the SMD owns, and only the very object judged: uid and resourceVersion are
        preconditions, so an object replaced or changed meanwhile is left alone."""
        metadata = item["metadata"]
        log.info("%s: removing %s (no longer in the spec)", owner.key, ref)
        try:
            await self.kube.delete(
                ref.kind,
                ref.name,
                ref.namespace,
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            )
        except KubeError as error:
            if error.code != 409:
                raise
            log.info("%s: %s changed before it could be removed; judging it again", owner.key, ref)

    # -- reporting ----------------------------------------------------------------------------------

    async def _report(
        self,
        context: Context,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        new: v1alpha1.SecureModelDeploymentStatus,
        *,
        control_events: bool = True,
    ) -> None:
        last = self._written.get(context.owner.key)
        # Transitions from what was last written: a status the server did not keep as written must not
        # announce the same change at every pass.
        before = status_rules.parse_status(last.status()) if last is not None else previous
        await self._write_status(context.owner, stored, new.as_object())
        for event in status_rules.transitions(before, new, controls=control_events):
            await events.post(
                self.kube,
                events.about_smd(context.owner),
                event.type,
                event.reason,
                event.message,
                context.now,
            )

    async def _write_status(self, owner: naming.Owner, stored: dict[str, Any], new: dict[str, Any]) -> None:
        """Only a change is written. A status the API server keeps differently from what was written
        (pruned by a CRD that does not know a field) is not written again while the server still holds
        what it kept of that write: a mismatch costs no loop. Any other change of it (a status forged by
        hand) is put right at the next pass."""
        if stored == new:
            return
        last = self._written.get(owner.key)
        if last is not None and last.holds(new, stored):
            return
        patch = {**{key: None for key in stored.keys() - new.keys()}, **new}
        kept = await self.kube.patch_status(owner.name, owner.namespace, patch)
        self._written[owner.key] = _Written(cache.pack(new), _digest(new), _digest(kept))

    async def _judge(
        self,
        context: Context,
        live: Observed,
        drift: Mapping[ChildRef, tuple[str, ...]],
        canonical_template: Manifest | None,
    ) -> tuple[list[ControlResult], Observed]:
        judged = replace(
            live,
            drift=drift,
            canonical_template=canonical_template,
            permissions=await self._permissions(context.owner),
            server_certificate=read.certificate_of(live.get(context.names.tls_secret)),
        )
        return judging.judge(context, judged), judged

    async def _blocked(
        self,
        context: Context,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        live: Observed,
        blockers: tuple[Blocker, ...],
    ) -> Outcome:
        """Status and one Event; nothing else is written, no key is issued. What runs is still judged, as
        it is: a Blocked SMD is never reported compliant on the strength of an earlier verdict, and
        tampering with it is reported, though not repaired, while it stays Blocked."""
        summary = status_rules.Summary(
            "Blocked", blockers[0].reason, "; ".join(item.message for item in blockers)
        )
        key, uid = context.stamp_key, context.owner.uid
        drift = {
            ref: (judging.STAMP,)
            for ref, item in live.objects.items()
            if ref in set(context.names.wanted(context.spec))
            and not canonical.object_intact(key, uid, ref.kind, item)
        }
        status = await self._report_as_it_is(
            context, stored, previous, live, drift, summary, control_events=False
        )
        return Outcome("Blocked", status)

    async def _report_as_it_is(
        self,
        context: Context,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        live: Observed,
        drift: Mapping[ChildRef, tuple[str, ...]],
        summary: status_rules.Summary,
        *,
        control_events: bool = True,
    ) -> dict[str, Any]:
        """Judge what runs as it is, under a phase decided before judging (Blocked, Quarantined): the
        metrics, then the status and its Events. The status written."""
        deployment = live.get(context.names.deployment)
        template = (
            deployment["spec"]["template"]["spec"]
            if deployment and context.names.deployment not in drift
            else None
        )
        results, judged = await self._judge(context, live, drift, template)
        new = status_rules.build_status(
            context,
            results,
            summary,
            previous,
            deployment,
            judged.server_certificate,
            weights.weights_status(context, judged),
        )
        _export_metrics(context.owner, results, new.as_object(), judged.server_certificate, None, judged)
        await self._report(context, stored, previous, new, control_events=control_events)
        return new.as_object()

    async def _quarantined(
        self,
        context: Context,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        live: Observed,
    ) -> Outcome:
        """Only the NetworkPolicy (deny all) and the sidecar's ConfigMap (refuse every client) are
        written, and kept so; nothing else is created, changed or deleted, no certificate is issued, and
        the pods run on untouched for forensics. What runs is judged as it is."""
        names, key, uid = context.names, context.stamp_key, context.owner.uid
        want = {
            ref: desired.stamp(manifest)
            for ref, manifest in (
                (names.network_policy, network.network_policy(context)),
                (names.sidecar_config, mtls.sidecar_config_map(context)),
            )
        }
        writes, drift, _ = await self._plan_writes(context, previous, live, want)
        frozen = replace(live, objects=await self._write_all(context.owner, live, writes))
        drift |= {
            ref: (judging.STAMP,)
            for ref, item in frozen.objects.items()
            if ref not in want
            and ref in set(names.wanted(context.spec))
            and not canonical.object_intact(key, uid, ref.kind, item)
        }
        summary = status_rules.quarantined(context)
        status = await self._report_as_it_is(context, stored, previous, frozen, drift, summary)
        return Outcome("Quarantined", status, repaired=bool(drift.keys() & want.keys()))

    async def _invalid(
        self,
        owner: naming.Owner,
        stored: dict[str, Any],
        previous: v1alpha1.SecureModelDeploymentStatus,
        message: str,
        now: datetime,
    ) -> Outcome:
        """The stored object does not match the API (it bypassed the schema): report, touch nothing."""
        new = status_rules.invalid_spec_status(previous, message, owner.generation, now)
        last = self._written.get(owner.key)
        before = status_rules.parse_status(last.status()) if last is not None else previous
        announced = any(
            item.type == status_rules.READY
            and item.reason == status_rules.INVALID_SPEC
            and item.message == message
            for item in before.conditions
        )
        await self._write_status(owner, stored, new.as_object())
        if not announced:
            await events.post(
                self.kube, events.about_smd(owner), "Warning", status_rules.INVALID_SPEC, message, now
            )
        return Outcome("Blocked", new.as_object())


def _delivery_pending(
    ref: ChildRef, owner: naming.Owner, previous: v1alpha1.SecureModelDeploymentStatus
) -> bool:
    """A client's delivery that could not be made before (its namespace was missing) is not drift."""
    ready = next((item for item in previous.conditions if item.type == status_rules.READY), None)
    return (
        ref.namespace != owner.namespace and ready is not None and ready.reason.startswith("ClientNamespace")
    )


def _replacing(manifest: Manifest, live: Manifest) -> Manifest:
    """The whole object to PUT over `live`: the operator's fields, at the version that was judged,
    keeping what others may keep on the object itself (its finalizers, foreign labels and annotations
    of the object, not of its pods) and what the server allocated and will not change (a Service's
    cluster IPs, a bound claim's volume)."""
    live_metadata = live["metadata"]
    metadata = dict(manifest["metadata"])
    metadata["resourceVersion"] = live_metadata["resourceVersion"]
    metadata["labels"] = {**(live_metadata.get("labels") or {}), **(metadata.get("labels") or {})}
    metadata["annotations"] = {
        **(live_metadata.get("annotations") or {}),
        **(metadata.get("annotations") or {}),
    }
    if live_metadata.get("finalizers"):
        metadata["finalizers"] = live_metadata["finalizers"]
    metadata.setdefault("ownerReferences", [])
    result = {**manifest, "metadata": metadata}
    live_spec = live.get("spec") or {}
    kept = {"Service": ("clusterIP", "clusterIPs", "ipFamilies"), "PersistentVolumeClaim": ("volumeName",)}
    for key in kept.get(manifest["kind"], ()):
        if key in live_spec:
            result["spec"] = {**result["spec"], key: live_spec[key]}
    return result


def _keep_restart(manifest: Manifest, live: Manifest | None) -> Manifest:
    """`kubectl rollout restart` only restarts the pods: its stamp on the template is kept."""
    stamp = (
        ((live or {}).get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    ).get(canonical.RESTARTED_AT_ANNOTATION)
    if stamp is None:
        return manifest
    template = manifest["spec"]["template"]
    annotations = {**template["metadata"].get("annotations", {}), canonical.RESTARTED_AT_ANNOTATION: stamp}
    return {
        **manifest,
        "spec": {
            **manifest["spec"],
            "template": {**template, "metadata": {**template["metadata"], "annotations": annotations}},
        },
    }


def _export_metrics(
    owner: naming.Owner,
    results: list[ControlResult],
    status: Mapping[str, Any],
    certificate: CertificateInfo | None,
    next_renewal: datetime | None,
    judged: Observed,
) -> None:
    values: list[tuple[Gauge, tuple[str, ...], float]] = []
    verified = status.get("weights") or {}
    if verified.get("manifestSha256"):
        found = (verified["manifestSha256"], verified.get("signerKeySha256", ""))
        values.append((metrics.WEIGHTS_VERIFIED, found, 1))
    values.append((metrics.WEIGHTS_VERIFICATION_FAILED_PODS, (), weights.failed_pods(judged)))
    for result in results:
        values.append((metrics.COMPLIANCE_STATUS, (result.name,), 1 if result.status == "Pass" else 0))
        values += [(metrics.CONTROL_WEAKENED, (result.name, item), 1) for item in result.weakenings]
    phase = status.get("phase")
    values += [
        (metrics.COMPLIANT, (), 1 if status.get("compliant") else 0),
        (metrics.READY, (), 1 if phase == "Ready" else 0),
        (metrics.QUARANTINED, (), 1 if phase == "Quarantined" else 0),
    ]
    if certificate is not None:
        values.append((metrics.CERTIFICATE_EXPIRY, (), certificate.not_after.timestamp()))
    if next_renewal is not None:
        values.append((metrics.CERTIFICATE_RENEWAL, (), next_renewal.timestamp()))
    # A pass that did not look at them (Blocked, quarantined) leaves the certificate's dates as they were.
    metrics.export_smd(
        owner.namespace, owner.name, values, keep=(metrics.CERTIFICATE_EXPIRY, metrics.CERTIFICATE_RENEWAL)
    )

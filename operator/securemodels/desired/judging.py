"""Every control's verdict on the live state, and the generic findings they share.

Two judges do not belong to one control: an owned object that differs from its canonical form (drift,
desired/canonical.py), and a pod that does not run a template the operator wrote. Their findings are
attributed to the control whose promise they break, by object kind and field path, so that a removed
sidecar fails `mtls`, a changed image `image-digest`, an added toleration `data-residency`, and anything
else in the pod `pod-security`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from securemodels.desired import canonical
from securemodels.desired.controls import (
    image_digest,
    mtls,
    network,
    pod_security,
    rbac,
    residency,
    storage,
    weights,
)
from securemodels.desired.controls.registry import CONTROLS
from securemodels.desired.model import Blocker, Context, ControlResult, Observed

DELETED = "deleted"
STAMP = "stamp"  # the object matched nothing the operator stamped, though no field shows how
# How many differing paths a message names before it summarises the rest.
MAX_PATHS = 8
_PLACEMENT = (
    "spec.affinity",
    "spec.nodeSelector",
    "spec.nodeName",
    "spec.tolerations",
    "spec.topologySpreadConstraints",
)
_KIND_CONTROL = {
    "NetworkPolicy": network.NAME,
    "ConfigMap": mtls.NAME,
    "Secret": mtls.NAME,
    "ServiceAccount": rbac.NAME,
    "Role": rbac.NAME,
    "RoleBinding": rbac.NAME,
    "PersistentVolumeClaim": storage.NAME,
}


def attribute(kind: str, path: str) -> str:
    """The control a difference at `path` of an object of `kind` breaks. Deployment paths are read as
    pod paths below spec.template."""
    if kind in _KIND_CONTROL:
        return _KIND_CONTROL[kind]
    if kind == "Service":
        return mtls.NAME if path.startswith("spec.ports") else network.NAME
    if path.startswith("spec.template."):
        path = path.removeprefix("spec.template.")
    elif kind == "Deployment":
        return pod_security.NAME  # paused, replicas, strategy, selector: what runs, and when
    if path.startswith("metadata.labels"):
        return network.NAME  # which policies and Services select the pods
    if f"[{mtls.SIDECAR}]" in path or "volumes[mtls-" in path:
        return mtls.NAME
    if _weights_path(path):
        return weights.NAME
    if path.endswith(".image") or path.endswith(".image (added)"):
        return image_digest.NAME
    if path.startswith(_PLACEMENT):
        return residency.NAME
    if path.startswith("spec.volumes") or ".volumeMounts" in path:
        return storage.NAME
    return pod_security.NAME


def _weights_path(path: str) -> bool:
    """The verifier, the weights' and the trusted key's volumes and mounts, or the init containers
    removed or replaced as a whole (an init container added is pod-security's)."""
    named = (
        f"[{weights.VERIFIER_CONTAINER}]",
        f"volumes[{weights.WEIGHTS_VOLUME}]",
        f"volumes[{weights.TRUST_VOLUME}]",
        f"volumeMounts[{weights.WEIGHTS_VOLUME}]",
    )
    return any(item in path for item in named) or path in (
        "spec.initContainers",
        "spec.initContainers (removed)",
    )


def _paths(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:MAX_PATHS])
    return shown + (f" and {len(paths) - MAX_PATHS} more" if len(paths) > MAX_PATHS else "")


def findings(context: Context, observed: Observed) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = defaultdict(list)
    for ref, paths in sorted(observed.drift.items()):
        if paths == (DELETED,):
            found[attribute(ref.kind, "")].append(
                f"{ref.kind} {ref.name} was deleted outside the operator; restored"
            )
            continue
        by_control: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            by_control[attribute(ref.kind, path)].append(path)
        for control, own in by_control.items():
            found[control].append(
                f"{ref.kind} {ref.name} was changed outside the operator at {_paths(own)}; restored"
            )
    for pod in observed.pods:
        verdict = canonical.judge_pod(context.stamp_key, context.owner.uid, pod, observed.canonical_template)
        if verdict.stamped:
            continue
        where = (
            f" (differs from the current template at {_paths(verdict.differences)})"
            if verdict.differences
            else ""
        )
        found[pod_security.NAME].append(
            f"pod {verdict.name} does not run a pod spec the operator wrote{where}"
        )
        for path in verdict.differences:
            control = attribute("Pod", path)
            if control != pod_security.NAME:
                found[control].append(f"pod {verdict.name}: {path} differs from the operator's template")
    return {control: tuple(items) for control, items in found.items()}


def preflight(context: Context, observed: Observed) -> tuple[Blocker, ...]:
    """Every control's reason not to write anything yet."""
    return tuple(blocker for control in CONTROLS if (blocker := control.preflight(context, observed)))


def judge(context: Context, observed: Observed) -> list[ControlResult]:
    """Every control's verdict on the live state."""
    annotated = replace(observed, findings=findings(context, observed))
    return [control.check(context, annotated) for control in CONTROLS]

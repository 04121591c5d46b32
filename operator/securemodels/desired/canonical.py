"""What "the same as the operator wants" means for a live object, field by field.

An owned object is compared whole, over everything that can matter for security (a kind's projection),
with the form the API server stores for the operator's own request: the response to the operator's last
write, or to a server-side dry run of it. Comparing with that canonical form, not with the request, makes
every default the server fills in match, and makes every field anyone else added, removed or changed a
difference, whichever manager holds it: server-side apply alone would leave another manager's fields in
place.

Both are proved with stamps only the operator can make: HMACs under a key it keeps in its namespace,
bound to the SMD's uid and the object's kind, namespace and name. Every object the operator writes
carries the HMAC of its canonical projection, so after a restart, with nothing remembered, an object that
anyone changed is told from one that is as written. Every pod template carries the HMAC of its canonical
pod spec; a pod whose spec (less what admission and scheduling add to every pod) does not match its
stamp was not made from a template the operator wrote for this SMD, whichever ReplicaSet made it.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securemodels.api.v1alpha1 import is_extended_resource
from securemodels.desired import naming

Manifest = dict[str, Any]

# Per kind, the top-level fields compared. Metadata is the operator's by label and ownerReference only:
# labels and annotations others add to the object itself change nothing it does.
PROJECTED_FIELDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec",),
    "Service": ("spec",),
    "ServiceAccount": ("automountServiceAccountToken", "secrets", "imagePullSecrets"),
    "ConfigMap": ("data", "binaryData", "immutable"),
    "Secret": ("type", "data", "immutable"),
    "NetworkPolicy": ("spec",),
    "Role": ("rules",),
    "RoleBinding": ("roleRef", "subjects"),
    "PersistentVolumeClaim": ("spec",),
    # The compliance reports of a namespace (desired/reports.py).
    "PolicyReport": ("scope", "summary", "results"),
    "Report": ("scope", "source", "summary", "results"),
}
# Filled in by the binding controller once the claim is bound: not the operator's, nor anyone's choice.
_CLAIM_BINDING_FIELDS = ("volumeName",)

TEMPLATE_MAC_ANNOTATION = "securemodels.io/template-hmac"
OBJECT_MAC_ANNOTATION = "securemodels.io/object-hmac"
CLAIM_MAC_ANNOTATION = "securemodels.io/claim-hmac"
# Allocated by the server, differently for a dry run than for the real write, and immutable after it.
_SERVICE_ALLOCATED_FIELDS = ("clusterIP", "clusterIPs")
# kubectl rollout restart stamps the template with this; it only restarts pods, so it is kept.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# What admission and the scheduler add to every pod made from a template: the node, the priority the
# class resolves to, and the DefaultTolerationSeconds tolerations.
_SCHEDULING_FIELDS = ("nodeName", "priority", "preemptionPolicy", "serviceAccount")
_DEFAULT_TOLERATIONS = frozenset(
    {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"},
)


def projection(kind: str, item: Mapping[str, Any]) -> Manifest:
    """The part of an object that is compared: its kind's fields, and the operator's own labels."""
    found = {key: item[key] for key in PROJECTED_FIELDS[kind] if key in item}
    labels = (item.get("metadata") or {}).get("labels") or {}
    found["labels"] = {key: value for key, value in labels.items() if key in naming.OPERATOR_LABEL_KEYS}
    spec = found.get("spec")
    if kind == "PersistentVolumeClaim" and isinstance(spec, Mapping):
        found["spec"] = {key: value for key, value in spec.items() if key not in _CLAIM_BINDING_FIELDS}
    if kind == "Service" and isinstance(spec, Mapping):
        found["spec"] = {key: value for key, value in spec.items() if key not in _SERVICE_ALLOCATED_FIELDS}
    if kind == "Deployment" and isinstance(spec, Mapping):
        found["spec"] = _without_restart_stamp(spec)
    return found


def _without_restart_stamp(spec: Mapping[str, Any]) -> Manifest:
    template = spec.get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if RESTARTED_AT_ANNOTATION not in annotations:
        return dict(spec)
    kept = {key: value for key, value in annotations.items() if key != RESTARTED_AT_ANNOTATION}
    metadata = {**template["metadata"], "annotations": kept}
    return {**spec, "template": {**template, "metadata": metadata}}


def digest(value: Any) -> str:
    """A stable hash of a JSON-like value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _named(items: Sequence[Any]) -> dict[str, Any] | None:
    """A list of objects keyed by their unique `name`, or None when it is not such a list."""
    if not items or not all(
        isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in items
    ):
        return None
    keyed = {item["name"]: item for item in items}
    return keyed if len(keyed) == len(items) else None


def _walk(live: Any, wanted: Any, path: str, found: list[str]) -> None:
    if live == wanted:
        return
    if isinstance(live, Mapping) and isinstance(wanted, Mapping):
        pairs = {f"{path}.{key}" if path else str(key): key for key in set(live) | set(wanted)}
        items = [
            (where, live.get(key), wanted.get(key), key in live, key in wanted)
            for where, key in pairs.items()
        ]
    elif isinstance(live, list) and isinstance(wanted, list):
        live_named, wanted_named = _named(live), _named(wanted)
        if live_named is None or wanted_named is None:
            found.append(path or "(whole object)")
            return
        names = set(live_named) | set(wanted_named)
        if list(live_named) != list(wanted_named) and set(live_named) == set(wanted_named):
            found.append(f"{path} (order)")
        items = [
            (
                f"{path}[{name}]",
                live_named.get(name),
                wanted_named.get(name),
                name in live_named,
                name in wanted_named,
            )
            for name in names
        ]
    else:
        found.append(path or "(whole object)")
        return
    for where, live_value, wanted_value, in_live, in_wanted in sorted(items, key=lambda item: item[0]):
        if not in_wanted:
            found.append(f"{where} (added)")
        elif not in_live:
            found.append(f"{where} (removed)")
        else:
            _walk(live_value, wanted_value, where, found)


def differences(live: Any, wanted: Any, path: str = "") -> list[str]:
    """Paths where `live` differs from `wanted`, as `spec.template.spec.containers[model].image`; lists
    of named objects are compared by name, other lists as wholes."""
    found: list[str] = []
    _walk(live, wanted, path, found)
    return found


def object_differences(kind: str, live: Mapping[str, Any], canonical: Mapping[str, Any]) -> list[str]:
    """Where a live object differs from its canonical form."""
    return differences(projection(kind, live), projection(kind, canonical))


# ----------------------------------------------------------------------------------------------- pods


def _without_default_tolerations(tolerations: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        item
        for item in tolerations
        if not (
            item.get("key") in _DEFAULT_TOLERATIONS
            and item.get("operator") == "Exists"
            and item.get("effect") == "NoExecute"
        )
    ]


def _requested_extended_resources(pod_spec: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(
        name
        for key in ("initContainers", "containers")
        for container in pod_spec.get(key) or []
        for name in ((container.get("resources") or {}).get("requests") or {})
        if is_extended_resource(name)
    )


def _without_extended_resource_tolerations(
    tolerations: Sequence[Mapping[str, Any]], resources: frozenset[str]
) -> list[Mapping[str, Any]]:
    """Less what the ExtendedResourceToleration admission plugin (on in some managed clusters) adds to a
    pod that requests an extended resource: a toleration of the NoSchedule taint of that name. It lets
    the pod onto nodes the resource it requests already confines it to."""
    return [
        item
        for item in tolerations
        if not (
            item.get("key") in resources
            and item.get("operator") == "Exists"
            and item.get("effect") == "NoSchedule"
            and set(item) == {"key", "operator", "effect"}
        )
    ]


def pod_spec_as_templated(pod_spec: Mapping[str, Any]) -> Manifest:
    """A pod's spec less what scheduling and admission add to every pod: what its template said."""
    spec = {key: value for key, value in pod_spec.items() if key not in _SCHEDULING_FIELDS}
    tolerations = _without_extended_resource_tolerations(
        _without_default_tolerations(spec.get("tolerations") or []), _requested_extended_resources(spec)
    )
    if tolerations:
        spec["tolerations"] = tolerations
    else:
        spec.pop("tolerations", None)
    return spec


def _mac(key: bytes, *parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def object_mac(
    key: bytes, owner_uid: str, kind: str, namespace: str, name: str, item: Mapping[str, Any]
) -> str:
    """The stamp of an object's projection, for the SMD that owns it, at its place."""
    return _mac(key, owner_uid, kind, namespace, name, projection(kind, item))


def object_intact(key: bytes, owner_uid: str, kind: str, item: Mapping[str, Any]) -> bool:
    """Whether the object is exactly as the operator wrote it: its stamp matches its projection."""
    metadata = item.get("metadata") or {}
    stamp = str((metadata.get("annotations") or {}).get(OBJECT_MAC_ANNOTATION, ""))
    wanted = object_mac(
        key, owner_uid, kind, str(metadata.get("namespace") or ""), str(metadata.get("name")), item
    )
    return bool(stamp) and hmac.compare_digest(stamp, wanted)


def with_object_mac(
    key: bytes, owner_uid: str, manifest: Mapping[str, Any], canonical_form: Mapping[str, Any]
) -> Manifest:
    """`manifest` with the stamp of the canonical form the server makes of it."""
    metadata = dict(manifest["metadata"])
    mac = object_mac(
        key, owner_uid, manifest["kind"], metadata["namespace"], metadata["name"], canonical_form
    )
    metadata["annotations"] = {**(metadata.get("annotations") or {}), OBJECT_MAC_ANNOTATION: mac}
    return {**manifest, "metadata": metadata}


def claim_mac(key: bytes, namespace: str, smd_name: str, claim_name: str) -> str:
    """The stamp of a volume claim made for the SMD of that name. A retained claim outlives its SMD, so
    this names the SMD by namespace and name, not by uid: an SMD of the same name takes its data over.
    Only the operator's key makes it; labels anyone may copy."""
    return _mac(key, "claim", namespace, smd_name, claim_name)


def owns(key: bytes, owner: naming.Owner, ref: naming.ChildRef, item: Mapping[str, Any]) -> bool:
    """Whether the live object at `ref` is the SMD's own. A volume claim must also prove it was made by
    the operator, for this SMD or an earlier one of its name: labels alone would let anyone who may
    create claims have the model mount a volume they prepared."""
    if not naming.owned_by(item, owner, ref) and ref.kind != "PersistentVolumeClaim":
        return False
    if ref.kind != "PersistentVolumeClaim":
        return True
    stamp = str(((item.get("metadata") or {}).get("annotations") or {}).get(CLAIM_MAC_ANNOTATION, ""))
    made_for_the_name = bool(stamp) and hmac.compare_digest(
        stamp, claim_mac(key, owner.namespace, owner.name, ref.name)
    )
    return made_for_the_name or (
        naming.owned_by(item, owner, ref) and object_intact(key, owner.uid, ref.kind, item)
    )


def template_mac(key: bytes, owner_uid: str, pod_spec: Mapping[str, Any]) -> str:
    """The stamp of a pod spec as templated (HMAC-SHA256, hex), for the SMD: the same for a canonical
    template spec and for every pod made from it."""
    return _mac(key, owner_uid, pod_spec_as_templated(pod_spec))


@dataclass(frozen=True)
class PodVerdict:
    """Whether a pod runs what a template of the operator's said, and if not, where it differs from
    the current template."""

    name: str
    stamped: bool
    differences: tuple[str, ...] = ()


def judge_pod(
    key: bytes, owner_uid: str, pod: Mapping[str, Any], template_spec: Mapping[str, Any] | None
) -> PodVerdict:
    """`template_spec`: the canonical pod spec of the current template, to explain a difference."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    stamp = str((metadata.get("annotations") or {}).get(TEMPLATE_MAC_ANNOTATION, ""))
    if hmac.compare_digest(stamp, template_mac(key, owner_uid, spec)):
        return PodVerdict(metadata.get("name", "?"), stamped=True)
    found = (
        differences(pod_spec_as_templated(spec), pod_spec_as_templated(template_spec), "spec")
        if template_spec
        else []
    )
    return PodVerdict(metadata.get("name", "?"), stamped=False, differences=tuple(found))

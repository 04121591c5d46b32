"""Small factories for the unit tests: a valid spec, a context around it, and the live state an API server
would hold once the operator's objects are written and its Deployment has made a pod, ready to be
tampered with."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from securemodels import desired
from securemodels.api.v1alpha1 import SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired import canonical, workload
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context, Facts, Manifest, Observed, Permissions
from securemodels.desired.naming import ChildRef, Owner
from securemodels.pki import CertificateInfo, KeyPair
from support.manifests import merge

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
REGISTRY = "registry.example.com"
DIGEST = "sha256:" + "4f3c2b1a09f8e7d6" * 4
IMAGE = f"{REGISTRY}/ml/fraud:1.4.2@{DIGEST}"
NAME = "fraud"
NAMESPACE = "ml-prod"
UID = "8d1f5c3e-0000-4000-8000-000000000001"
STORAGE_CLASS = "encrypted-gp3"
BUNDLE = b"-----BEGIN CERTIFICATE-----\nbundle\n-----END CERTIFICATE-----\n"
FINGERPRINT = "ab" * 32
SERVER = mtls.ServerTLS(
    pair=KeyPair(cert_pem=b"server-cert", key_pem=b"server-key"), bundle_pem=BUNDLE, fingerprint=FINGERPRINT
)
STAMP_KEY = b"unit-tests-template-key-0123456789abcdef"
NODE = "node-a"
REGION = "eu-west-1"
DEPLOYMENT_UID = "d0000000-0000-4000-8000-000000000001"
REPLICA_SET_UID = "r0000000-0000-4000-8000-000000000001"
POD_TEMPLATE_HASH = "7c9d8f6b5"
REPLICA_SET_NAME = f"{NAME}-{POD_TEMPLATE_HASH}"
POD_NAME = f"{REPLICA_SET_NAME}-abcde"
# What admission and the scheduler add to every pod (DefaultTolerationSeconds, priority, the node).
DEFAULT_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]

Mutation = Callable[[Manifest], object]


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """The smallest valid spec as a user writes it (camelCase keys), with overrides merged in."""
    return merge({"model": {"image": IMAGE}}, overrides)


def spec(**overrides: Any) -> SecureModelDeploymentSpec:
    return SecureModelDeploymentSpec.model_validate(spec_dict(**overrides))


def owner(name: str = NAME, namespace: str = NAMESPACE, generation: int = 3, uid: str = UID) -> Owner:
    return Owner(name=name, namespace=namespace, uid=uid, generation=generation)


def context(
    smd: SecureModelDeploymentSpec | None = None,
    *,
    config: OperatorConfig | None = None,
    facts: Facts | None = None,
    now: datetime = NOW,
    who: Owner | None = None,
    stamp_key: bytes = STAMP_KEY,
    **overrides: Any,
) -> Context:
    """A context for `smd` (or the baseline spec with `overrides`), with facts that let it be realised:
    its storage class encrypts, and the node the pod runs on is in its first region."""
    smd = smd if smd is not None else spec(**overrides)
    if facts is None:
        region = smd.residency.regions[0] if smd.residency else REGION
        facts = Facts(storage_class=storage_class() if smd.storage else None, node_regions={NODE: region})
    return Context(
        owner=who or owner(),
        spec=smd,
        config=config or OperatorConfig(),
        now=now,
        facts=facts,
        stamp_key=stamp_key,
    )


def allowing(*registries: str) -> OperatorConfig:
    """A configuration with a cluster-wide registry allow-list, the sidecar image mirrored into the first."""
    return OperatorConfig(
        allowed_registries=registries, sidecar_image=f"{registries[0]}/nginxinc/nginx-unprivileged@{DIGEST}"
    )


def storage_class(
    name: str = STORAGE_CLASS,
    provisioner: str = "ebs.csi.aws.com",
    parameters: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    metadata: dict[str, Any] = {"name": name}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata,
        "provisioner": provisioner,
        "parameters": dict({"type": "gp3", "encrypted": "true"} if parameters is None else parameters),
    }


def certificate(now: datetime = NOW, valid_for: timedelta = timedelta(hours=16)) -> CertificateInfo:
    """What the operator would parse from the live TLS Secret."""
    return CertificateInfo(
        not_before=now - timedelta(hours=8),
        not_after=now + valid_for,
        serial_number="1f",
        sha256_fingerprint=FINGERPRINT,
        common_name=NAME,
        dns_names=(NAME,),
    )


def build(ctx: Context, clients: Mapping[str, KeyPair] | None = None) -> desired.Desired:
    return desired.build(ctx, SERVER, clients or {})


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [
        item for item in manifests if item["kind"] == kind and name in (None, item["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(manifests: Iterable[Manifest]) -> list[str]:
    return [item["kind"] for item in manifests]


def pod_spec(workload_object: Manifest) -> dict[str, Any]:
    """The pod spec of a Deployment (its template's) or of a Pod."""
    if workload_object["kind"] == "Pod":
        found: dict[str, Any] = workload_object["spec"]
        return found
    result: dict[str, Any] = workload_object["spec"]["template"]["spec"]
    return result


def container(workload_object: Manifest, name: str) -> dict[str, Any]:
    return next(item for item in pod_spec(workload_object)["containers"] if item["name"] == name)


# ----------------------------------------------------------------------------------------- live state


def replica_set_of(deployment: Manifest, uid: str = REPLICA_SET_UID) -> Manifest:
    """The ReplicaSet the Deployment controller makes, as the cache keeps it (metadata only)."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": REPLICA_SET_NAME,
            "namespace": deployment["metadata"]["namespace"],
            "uid": uid,
            "labels": {**labels, "pod-template-hash": POD_TEMPLATE_HASH},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment["metadata"]["name"],
                    "uid": deployment["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }


def pod_of(
    deployment: Manifest, replica_set: Manifest | None, name: str = POD_NAME, node: str | None = NODE
) -> Manifest:
    """A pod the ReplicaSet made from the Deployment's template, as admitted and scheduled: the node,
    the priority and the default tolerations added, the template's labels and annotations copied."""
    template = deployment["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    spec.update(
        serviceAccount=spec["serviceAccountName"],
        priority=0,
        preemptionPolicy="PreemptLowerPriority",
        tolerations=[*spec.get("tolerations", []), *copy.deepcopy(DEFAULT_TOLERATIONS)],
    )
    if node is not None:
        spec["nodeName"] = node
    owners = (
        [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": replica_set["metadata"]["name"],
                "uid": replica_set["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        if replica_set is not None
        else []
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "uid": f"pod-{name}",
            "labels": {**template["metadata"]["labels"], "pod-template-hash": POD_TEMPLATE_HASH},
            "annotations": dict(template["metadata"].get("annotations") or {}),
            "ownerReferences": owners,
        },
        "spec": spec,
        "status": {"phase": "Running"},
    }


def observe(ctx: Context, clients: Mapping[str, KeyPair] | None = None, **changes: Any) -> Observed:
    """What the cluster holds once the operator's objects are written: deep copies of what it built
    (keyed by ChildRef), the Deployment's template stamped with the context's key, one ReplicaSet and,
    unless no replica is wanted, one running pod made from the template. Nothing is allowed to the
    model's account. `changes` replace whole fields of the result."""
    objects = copy.deepcopy(build(ctx, clients).by_ref())
    ref = ctx.names.deployment
    deployment = objects[ref]
    deployment["metadata"]["uid"] = DEPLOYMENT_UID
    deployment, _ = workload.with_template_mac(deployment, ctx.stamp_key, UID, deployment)
    objects[ref] = deployment
    replica_set = replica_set_of(deployment)
    pods = (pod_of(deployment, replica_set),) if ctx.spec.model.replicas > 0 else ()
    observed = Observed(
        objects=objects,
        canonical_template=copy.deepcopy(pod_spec(deployment)),
        pods=pods,
        replica_sets=(replica_set,),
        permissions=Permissions(),
        server_certificate=certificate(ctx.now),
    )
    return replace(observed, **changes)


def tampered(manifest: Manifest | None, mutation: Mutation) -> Manifest:
    """A deep copy of `manifest` changed by `mutation`."""
    assert manifest is not None
    result = copy.deepcopy(manifest)
    mutation(result)
    return result


def ref_of(observed: Observed, kind: str, name: str | None = None) -> ChildRef:
    (found,) = [ref for ref in observed.objects if ref.kind == kind and name in (None, ref.name)]
    return found


def live(observed: Observed, kind: str, name: str | None = None) -> Manifest:
    """The one live object of `kind` (and `name`)."""
    return observed.objects[ref_of(observed, kind, name)]


def altered(observed: Observed, kind: str, mutation: Mutation, name: str | None = None) -> Observed:
    """The live state with one object changed by `mutation`."""
    ref = ref_of(observed, kind, name)
    return replace(observed, objects={**observed.objects, ref: tampered(observed.objects[ref], mutation)})


def removed(observed: Observed, kind: str, name: str | None = None) -> Observed:
    """The live state with one object gone."""
    ref = ref_of(observed, kind, name)
    return replace(observed, objects={key: value for key, value in observed.objects.items() if key != ref})


def restamped(pod: Manifest, key: bytes = STAMP_KEY) -> Manifest:
    """The pod with a stamp that matches its spec, as if the operator had written its template."""
    result = copy.deepcopy(pod)
    result["metadata"]["annotations"][canonical.TEMPLATE_MAC_ANNOTATION] = canonical.template_mac(
        key, UID, result["spec"]
    )
    return result


def with_pod(observed: Observed, mutation: Mutation, *, stamp: bool = False) -> Observed:
    """The live state with its pod changed by `mutation`; `stamp`: re-stamped to match, so that only
    the control's own judgement of the pod is in play."""
    (pod,) = observed.pods
    changed = tampered(pod, mutation)
    return replace(observed, pods=(restamped(changed) if stamp else changed,))


def with_pods(observed: Observed, *pods: Manifest) -> Observed:
    """The live state with more pods."""
    return replace(observed, pods=(*observed.pods, *pods))

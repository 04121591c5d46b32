"""What a reconcile reads: the watch-fed caches of every kind judging needs, and the views of them that
the pure layers take (an SMD's children, its pods, the foreign objects that could affect it).

The indexes keep one reconcile's cost independent of how many other SMDs share the namespace: a policy,
Service or binding is found by what it could select or name, not by scanning the namespace.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from securemodels.config import OperatorConfig
from securemodels.desired import canonical, naming, permissions
from securemodels.desired.controls import residency
from securemodels.desired.model import Context, Facts, Manifest, Observed
from securemodels.k8s import cache
from securemodels.k8s.client import Kube
from securemodels.pki import CERT_KEY, PRIVATE_KEY_KEY, CertificateInfo, KeyPair, certificate_info

MANAGED = {naming.MANAGED_BY_LABEL: naming.MANAGED_BY}
ANY = "*"  # index value: selects, or names, whatever the SMD is


def decode(data: Mapping[str, str] | None) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


def key_pair(secret: Manifest | None) -> KeyPair | None:
    if secret is None:
        return None
    data = decode(secret.get("data"))
    if CERT_KEY not in data or PRIVATE_KEY_KEY not in data:
        return None
    return KeyPair(cert_pem=data[CERT_KEY], key_pem=data[PRIVATE_KEY_KEY])


def certificate_of(secret: Manifest | None) -> CertificateInfo | None:
    pair = key_pair(secret)
    if pair is None:
        return None
    try:
        return certificate_info(pair.cert_pem)
    except ValueError:
        return None


# -------------------------------------------------------------------------------------------- indexes


def _namespace(item: Mapping[str, Any]) -> str:
    return str(item["metadata"].get("namespace") or "")


def owner_uids(item: Mapping[str, Any]) -> Iterable[str]:
    """The SMD uids an object belongs to: its controller reference, or its owner label."""
    metadata = item["metadata"]
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid"):
            yield str(ref["uid"])
    uid = (metadata.get("labels") or {}).get(naming.OWNER_UID_LABEL)
    if uid:
        yield str(uid)


def _selected_instances(selector: Mapping[str, Any] | None, namespace: str) -> Iterable[str]:
    """Which SMDs a label selector could select: the one its instance label names, or any."""
    labels = (selector or {}).get("matchLabels") or {}
    instance = labels.get(naming.INSTANCE_LABEL)
    yield f"{namespace}/{instance}" if isinstance(instance, str) else f"{namespace}/{ANY}"


def _policy_selects(item: Mapping[str, Any]) -> Iterable[str]:
    return _selected_instances((item.get("spec") or {}).get("podSelector"), _namespace(item))


def _service_selects(item: Mapping[str, Any]) -> Iterable[str]:
    selector = (item.get("spec") or {}).get("selector")
    if not selector:
        return []  # no selector: no endpoints chosen by labels
    return _selected_instances({"matchLabels": selector}, _namespace(item))


def _pod_uses(item: Mapping[str, Any]) -> Iterable[str]:
    namespace = _namespace(item)
    spec = item.get("spec") or {}
    instance = (item["metadata"].get("labels") or {}).get(naming.INSTANCE_LABEL)
    if instance:
        yield f"{namespace}/instance/{instance}"
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            yield f"{namespace}/secret/{volume['secret'].get('secretName')}"
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                yield f"{namespace}/secret/{source['secret'].get('name')}"
        if "persistentVolumeClaim" in volume:
            yield f"{namespace}/claim/{volume['persistentVolumeClaim'].get('claimName')}"
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            for source in container.get("envFrom") or []:
                if "secretRef" in source:
                    yield f"{namespace}/secret/{source['secretRef'].get('name')}"
            for variable in container.get("env") or []:
                reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
                if reference:
                    yield f"{namespace}/secret/{reference.get('name')}"
    yield f"{namespace}/account/{spec.get('serviceAccountName') or 'default'}"


def _binding_subjects(item: Mapping[str, Any]) -> Iterable[str]:
    for subject in item.get("subjects") or []:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "ServiceAccount":
            yield f"sa:{subject.get('namespace') or _namespace(item)}/{name}"
        elif kind in ("User", "Group"):
            yield f"{kind.lower()}:{name}"


def _binding_role(item: Mapping[str, Any]) -> Iterable[str]:
    ref = item.get("roleRef") or {}
    yield f"{ref.get('kind')}/{ref.get('name')}"


def selected(kind: str, item: Mapping[str, Any]) -> Iterable[str]:
    """ "<namespace>/<SMD name or *>" that a Service or NetworkPolicy could select."""
    return _service_selects(item) if kind == "Service" else _policy_selects(item)


def pod_model_names(item: Mapping[str, Any]) -> set[str]:
    """The SMDs a pod could belong to: its instance label, or the model Secret, volume or account it
    uses (named <smd>-tls, <smd>-models and <smd>)."""
    found = set()
    for use in _pod_uses(item):
        _, what, name = use.split("/", 2)
        if what == "instance" or what == "account":
            found.add(name)
        elif what == "secret" and name.endswith(f"-{naming.TLS_PURPOSE}"):
            found.add(name.removesuffix(f"-{naming.TLS_PURPOSE}"))
        elif what == "claim" and name.endswith(f"-{naming.VOLUME_PURPOSE}"):
            found.add(name.removesuffix(f"-{naming.VOLUME_PURPOSE}"))
    return found


def subjects(item: Mapping[str, Any]) -> list[str]:
    return list(_binding_subjects(item))


OWNER = "owner"
SELECTS = "selects"
USES = "uses"
SUBJECT = "subject"
ROLE = "role"


@dataclass(frozen=True)
class Watched:
    kind: str
    namespaced: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    strip: cache.Strip = cache.without_managed_fields
    indexes: Mapping[str, cache.IndexFunction] = field(default_factory=dict)


# What the operator watches. Its own children by label; the kinds others' objects of which can change
# what the model can do or who can reach it, whole (pods, Services, policies, RBAC).
WATCHED = (
    Watched("Deployment", True, MANAGED, indexes={OWNER: owner_uids}),
    Watched("ReplicaSet", True, MANAGED, strip=cache.metadata_only, indexes={OWNER: owner_uids}),
    Watched("ServiceAccount", True, MANAGED, indexes={OWNER: owner_uids}),
    Watched("ConfigMap", True, MANAGED, indexes={OWNER: owner_uids}),
    Watched("Secret", True, MANAGED, indexes={OWNER: owner_uids}),
    Watched("PersistentVolumeClaim", True, MANAGED, indexes={OWNER: owner_uids}),
    Watched("Service", True, indexes={OWNER: owner_uids, SELECTS: _service_selects}),
    Watched("NetworkPolicy", True, indexes={OWNER: owner_uids, SELECTS: _policy_selects}),
    Watched("Role", True, indexes={OWNER: owner_uids}),
    Watched(
        "RoleBinding", True, indexes={OWNER: owner_uids, SUBJECT: _binding_subjects, ROLE: _binding_role}
    ),
    Watched("Pod", True, strip=cache.pod_essentials, indexes={USES: _pod_uses}),
    Watched("ClusterRole", False),
    Watched("ClusterRoleBinding", False, indexes={SUBJECT: _binding_subjects, ROLE: _binding_role}),
    Watched("StorageClass", False),
    Watched("Namespace", False, strip=cache.metadata_only),
    Watched("Node", False, strip=cache.metadata_only),
)


def change_scope(kind: str, old: Manifest | None, new: Manifest | None, own_namespace: str) -> str | None:
    """Whose judging a change of a cached object can alter: the SMDs of a namespace (a Namespace counts
    as its own), every SMD ("": cluster-scoped kinds and the operator's own objects), or none (a Node's
    heartbeat: of a Node only its region is judged)."""
    if kind == "Node":
        before, after = (
            None if item is None else (item["metadata"].get("labels") or {}).get(residency.REGION_LABEL)
            for item in (old, new)
        )
        return None if before == after else ""
    metadata = (new or old or {}).get("metadata") or {}
    if kind == "Namespace":
        return str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    return "" if namespace == own_namespace else namespace


class Caches:
    """One Store per watched kind, fed by one reflector per scope."""

    def __init__(self, kube: Kube, config: OperatorConfig, on_change: cache.OnChange) -> None:
        self.stores = {item.kind: cache.Store(item.kind, item.indexes) for item in WATCHED}
        scopes: list[str | None] = list(config.watch_namespaces) or [None]
        self.reflectors: list[cache.Reflector] = []
        for item in WATCHED:
            for scope in scopes if item.namespaced else [None]:
                self.reflectors.append(
                    cache.Reflector(
                        kube,
                        self.stores[item.kind],
                        on_change,
                        namespace=scope,
                        labels=item.labels,
                        strip=item.strip,
                    )
                )
        if config.watch_namespaces and config.namespace not in config.watch_namespaces:
            # Its own objects only, each by name: the operator may read nothing else in its namespace.
            for kind, name in naming.OWN_OBJECTS:
                self.reflectors.append(
                    cache.Reflector(
                        kube,
                        self.stores[kind],
                        on_change,
                        namespace=config.namespace,
                        fields={"metadata.name": name},
                    )
                )

    def __getitem__(self, kind: str) -> cache.Store:
        return self.stores[kind]

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(reflector.run(), name=f"watch {reflector.kind}")
            for reflector in self.reflectors
        ]

    @property
    def synced(self) -> bool:
        return all(reflector.synced.is_set() for reflector in self.reflectors)

    def problems(self) -> list[str]:
        return [reflector.problem for reflector in self.reflectors if reflector.problem]

    async def wait_synced(self) -> None:
        await asyncio.gather(*(reflector.synced.wait() for reflector in self.reflectors))


# ------------------------------------------------------------------------------------------ the views


def facts(caches: Caches, context: Context, missing_references: tuple[str, ...]) -> Facts:
    spec, config = context.spec, context.config
    namespaces = caches["Namespace"]
    managed = set(config.watch_namespaces)
    everywhere = sorted({client.namespace for client in spec.mtls.clients})
    unmanaged = tuple(name for name in everywhere if managed and name not in managed)
    nodes = caches["Node"].all()
    regions = {
        node["metadata"]["name"]: str((node["metadata"].get("labels") or {}).get(residency.REGION_LABEL, ""))
        for node in nodes
    }
    return Facts(
        storage_class=caches["StorageClass"].get(None, spec.storage.storage_class_name)
        if spec.storage
        else None,
        missing_references=missing_references,
        region_has_nodes=(
            any(region in spec.residency.regions for region in regions.values()) if spec.residency else None
        ),
        node_regions=regions,
        missing_client_namespaces=tuple(
            name for name in everywhere if name not in unmanaged and namespaces.get(None, name) is None
        ),
        unmanaged_client_namespaces=unmanaged,
    )


async def missing_references(
    kube: Kube, context: Context, references: list[tuple[str, str]]
) -> tuple[str, ...]:
    """The Secrets and ConfigMaps the model mounts that do not exist. Asked of the API server, not the
    caches: the operator holds no data, and watches no metadata, of Secrets it does not own."""

    async def missing(kind: str, name: str) -> str | None:
        found = await kube.get(kind, name, context.owner.namespace)
        return None if found is not None else f"{kind}/{name}"

    answers = await asyncio.gather(*(missing(kind, name) for kind, name in references))
    return tuple(item for item in answers if item)


async def signing_config_map(kube: Kube, context: Context) -> Manifest | None:
    """The ConfigMap holding the key or certificate chain the weights are verified against, read at
    every pass: the operator pins what it holds now into the verifier's arguments."""
    weights = context.spec.model.weights
    if weights is None or weights.signature is None:
        return None
    found = await kube.get("ConfigMap", weights.signature.trust.name, context.owner.namespace)
    if found is None:
        return None
    return {
        "metadata": {"name": found["metadata"]["name"]},
        **{key: found[key] for key in ("data", "binaryData") if key in found},
    }


def _live(caches: Caches, ref: naming.ChildRef) -> Manifest | None:
    return caches[ref.kind].get(ref.namespace, ref.name)


def observe(caches: Caches, context: Context) -> Observed:
    """The SMD's children and everything around them, as the caches hold them now. `objects` holds
    only what is the SMD's own; a wanted name someone else holds is in `taken`. Drift, permissions and
    the canonical template are the reconciler's to add."""
    owner, names = context.owner, context.names
    objects: dict[naming.ChildRef, Manifest] = {}
    taken = []
    wanted = set(names.wanted(context.spec))
    for ref in [*names.local(), *names.remote()]:
        item = _live(caches, ref)
        if item is None:
            continue
        if canonical.owns(context.stamp_key, owner, ref, item):
            objects[ref] = item
        elif ref in wanted:
            taken.append(ref)
    namespace = owner.namespace
    pods: dict[str, Manifest] = {}
    for use in (
        f"instance/{owner.name}",
        f"secret/{names.tls_secret.name}",
        f"claim/{names.volume_claim.name}",
        f"account/{names.service_account.name}",
    ):
        for pod in caches["Pod"].indexed(USES, f"{namespace}/{use}"):
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                pods[pod["metadata"]["name"]] = pod
    candidates = (f"{namespace}/{owner.name}", f"{namespace}/{ANY}")
    foreign_policies = [
        policy
        for value in candidates
        for policy in caches["NetworkPolicy"].indexed(SELECTS, value)
        if owner.uid not in owner_uids(policy)
    ]
    foreign_services = [
        service
        for value in candidates
        for service in caches["Service"].indexed(SELECTS, value)
        if owner.uid not in owner_uids(service)
    ]
    return Observed(
        objects=objects,
        taken=tuple(taken),
        pods=tuple(pods[name] for name in sorted(pods)),
        replica_sets=tuple(caches["ReplicaSet"].indexed(OWNER, _deployment_uid(objects, names))),
        foreign_policies=tuple(foreign_policies),
        foreign_services=tuple(foreign_services),
        bindings_naming_model=bindings_naming_model(caches, owner),
        server_certificate=certificate_of(objects.get(names.tls_secret)),
    )


def _deployment_uid(objects: Mapping[naming.ChildRef, Manifest], names: naming.Children) -> str:
    deployment = objects.get(names.deployment)
    return str(deployment["metadata"]["uid"]) if deployment else ""


def bindings_naming_model(caches: Caches, owner: naming.Owner) -> tuple[str, ...]:
    """Bindings that name the model's account itself, its user name, or its namespace's group: where a
    grant the authorizer reports comes from (grants to every account are the cluster's)."""
    subjects = (
        f"sa:{owner.namespace}/{owner.name}",
        f"user:{permissions.user_of(owner.namespace, owner.name)}",
        f"group:system:serviceaccounts:{owner.namespace}",
    )
    found = {
        _describe_binding(binding)
        for subject in subjects
        for kind in ("RoleBinding", "ClusterRoleBinding")
        for binding in caches[kind].indexed(SUBJECT, subject)
    }
    return tuple(sorted(found))


def namespaces_naming_model(caches: Caches, owner: naming.Owner) -> tuple[str, ...]:
    """Other namespaces where a RoleBinding names the model's account, its user name or its namespace's
    group: the authorizer is asked about those namespaces too."""
    subjects = (
        f"sa:{owner.namespace}/{owner.name}",
        f"user:{permissions.user_of(owner.namespace, owner.name)}",
        f"group:system:serviceaccounts:{owner.namespace}",
    )
    found = {
        str(binding["metadata"].get("namespace"))
        for subject in subjects
        for binding in caches["RoleBinding"].indexed(SUBJECT, subject)
    }
    return tuple(sorted(found - {owner.namespace}))


def _describe_binding(binding: Manifest) -> str:
    metadata = binding["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{binding['kind']} {where}{metadata['name']}"


def client_deliveries(caches: Caches, uid: str) -> list[Manifest]:
    """The client Secrets and CA bundles the SMD delivered, wherever they are."""
    return [
        item
        for kind in ("Secret", "ConfigMap")
        for item in caches[kind].indexed(OWNER, uid)
        if (item["metadata"].get("labels") or {}).get(naming.COMPONENT_LABEL) == naming.CLIENT_COMPONENT
    ]

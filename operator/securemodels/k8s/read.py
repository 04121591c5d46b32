"""Reads that feed the pure layers: the SMD's live children, and facts about what it refers to.

Key material is decoded only where the operator needs it (its own TLS Secrets and the CA). Of the
Secrets the model mounts, only existence is checked; their data is fetched with them but never decoded,
logged or kept.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Mapping
from typing import Any

from securemodels.desired import naming
from securemodels.desired.controls import mtls, network, rbac, residency, storage
from securemodels.desired.model import Context, Facts, Manifest, Observed
from securemodels.k8s.client import EXISTS, Kube
from securemodels.pki import CERT_KEY, PRIVATE_KEY_KEY, CertificateInfo, KeyPair, certificate_info

# Purposes of the children named <smd>-<purpose> (the Deployment, Service and account are named <smd>).
CHILD_PURPOSES = (mtls.TLS_PURPOSE, mtls.SIDECAR_PURPOSE, network.PURPOSE, rbac.VIEWER, rbac.DEPLOYER)


def decode(data: Mapping[str, str] | None) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


def key_pair(secret: Manifest | None) -> KeyPair | None:
    if secret is None:
        return None
    data = decode(secret.get("data"))
    if CERT_KEY not in data or PRIVATE_KEY_KEY not in data:
        return None
    return KeyPair(cert_pem=data[CERT_KEY], key_pem=data[PRIVATE_KEY_KEY])


def _certificate(secret: Manifest | None) -> CertificateInfo | None:
    pair = key_pair(secret)
    if pair is None:
        return None
    try:
        return certificate_info(pair.cert_pem)
    except ValueError:
        return None


class SharedList:
    """A cluster-wide list every SMD's reconcile needs (ClusterRoleBindings), read at most once per
    `ttl` seconds instead of once per SMD."""

    def __init__(self, kind: str, ttl: float) -> None:
        self._kind, self._ttl = kind, ttl
        self._items: list[Manifest] = []
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self, kube: Kube) -> list[Manifest]:
        async with self._lock:
            if time.monotonic() - self._read_at >= self._ttl:
                self._items = await kube.list(self._kind)
                self._read_at = time.monotonic()
            return self._items


async def observe(
    kube: Kube, owner: naming.Owner, cluster_role_bindings: SharedList
) -> tuple[Observed, Manifest | None]:
    """The live children, and the live TLS Secret (the handler needs its key to keep using it)."""
    namespace = owner.namespace
    ours = naming.owned_selector(owner)
    deployment, service, account, sidecar_config, tls_secret = await asyncio.gather(
        kube.get("Deployment", owner.name, namespace),
        kube.get("Service", owner.name, namespace),
        kube.get("ServiceAccount", owner.name, namespace),
        kube.get("ConfigMap", owner.child(mtls.SIDECAR_PURPOSE), namespace),
        kube.get("Secret", owner.child(mtls.TLS_PURPOSE), namespace),
    )
    claims, policies, roles, bindings, cluster_bindings, pods = await asyncio.gather(
        kube.list("PersistentVolumeClaim", namespace, ours),
        kube.list("NetworkPolicy", namespace),
        kube.list("Role", namespace, ours),
        kube.list("RoleBinding", namespace),
        cluster_role_bindings.get(kube),
        kube.list("Pod", namespace, naming.selector_labels(owner)),
    )
    owned = [claim for claim in claims if owned_by(claim, owner)]
    named = [deployment, service, account, sidecar_config, tls_secret, *policies, *bindings]
    wanted_names = {owner.name, *(owner.child(purpose) for purpose in CHILD_PURPOSES)}
    taken = sorted(
        f"{item['kind']}/{item['metadata']['name']}"
        for item in named
        if item is not None and item["metadata"]["name"] in wanted_names and not owned_by(item, owner)
    )
    observed = Observed(
        deployment=deployment if owned_by(deployment, owner) else None,
        service=service if owned_by(service, owner) else None,
        service_account=account if owned_by(account, owner) else None,
        sidecar_config=sidecar_config if owned_by(sidecar_config, owner) else None,
        server_certificate=_certificate(tls_secret) if owned_by(tls_secret, owner) else None,
        pvc=next(
            (claim for claim in owned if claim["metadata"]["name"] == owner.child(storage.PURPOSE)), None
        ),
        network_policies=tuple(policies),
        roles=tuple(role for role in roles if owned_by(role, owner)),
        role_bindings=tuple(bindings),
        cluster_role_bindings=tuple(cluster_bindings),
        pods=tuple(pods),
        names_taken=tuple(taken),
    )
    return observed, tls_secret if owned_by(tls_secret, owner) else None


def owned_by(item: Manifest | None, owner: naming.Owner) -> bool:
    """Objects with our name but another owner are not ours to judge, change or delete."""
    if item is None:
        return False
    return any(ref.get("uid") == owner.uid for ref in item["metadata"].get("ownerReferences") or [])


async def facts(kube: Kube, context: Context, references: list[tuple[str, str]]) -> Facts:
    spec, namespace = context.spec, context.owner.namespace

    async def missing_reference(kind: str, name: str) -> str | None:
        found = await kube.get(kind, name, namespace)
        return None if found is not None else f"{kind}/{name}"

    async def region_has_nodes() -> bool | None:
        if spec.residency is None:
            return None
        nodes = await kube.list(
            "Node", labels={residency.REGION_LABEL: list(spec.residency.regions)}, limit=1
        )
        return bool(nodes)

    async def missing_namespace(name: str) -> str | None:
        return None if await kube.get("Namespace", name) is not None else name

    storage_class = (
        kube.get("StorageClass", spec.storage.storage_class_name) if spec.storage else asyncio.sleep(0, None)
    )
    managed = set(context.config.watch_namespaces)
    everywhere = sorted({client.namespace for client in spec.mtls.clients})
    unmanaged = [name for name in everywhere if managed and name not in managed]
    client_namespaces = [name for name in everywhere if name not in unmanaged]
    found_class, has_nodes, *rest = await asyncio.gather(
        storage_class,
        region_has_nodes(),
        *(missing_reference(kind, name) for kind, name in references),
        *(missing_namespace(name) for name in client_namespaces),
    )
    missing_refs, missing_namespaces = rest[: len(references)], rest[len(references) :]
    return Facts(
        storage_class=found_class,
        missing_references=tuple(item for item in missing_refs if item),
        region_has_nodes=has_nodes,
        missing_client_namespaces=tuple(item for item in missing_namespaces if item),
        unmanaged_client_namespaces=tuple(unmanaged),
    )


async def client_secrets(kube: Kube, context: Context) -> dict[str, KeyPair | None]:
    """The client certificates already delivered, by client identity."""
    clients = [client for client in context.spec.mtls.clients if context.facts.delivers_to(client.namespace)]
    secrets = await asyncio.gather(
        *(
            kube.get("Secret", mtls.client_secret_name(context, client), client.namespace)
            for client in clients
        )
    )
    return {
        mtls.client_identity(client): key_pair(secret)
        for client, secret in zip(clients, secrets, strict=True)
    }


async def remote_objects(
    kube: Kube, namespaces: tuple[str, ...], owner_uid: str | None = None
) -> list[Manifest]:
    """Client Secrets and CA bundles in other namespaces: one SMD's (by uid), or everyone's.

    `namespaces` empty: look cluster-wide; otherwise only where the operator has permissions.
    """
    labels: dict[str, Any] = {
        "app.kubernetes.io/managed-by": naming.MANAGED_BY,
        naming.OWNER_UID_LABEL: owner_uid or EXISTS,
    }
    scopes: tuple[str | None, ...] = namespaces or (None,)
    found = await asyncio.gather(
        *(kube.list(kind, namespace, labels) for kind in ("Secret", "ConfigMap") for namespace in scopes)
    )
    return [item for items in found for item in items]

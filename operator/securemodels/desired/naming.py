"""Names, labels and owner references of the objects an SMD owns (DESIGN §7).

`children()` is the one list of every object an SMD may write, in every kind and namespace: the builders
take their names from it and the reads look them up by it, so no object can be written under a name the
reads do not check for someone else's. Within each kind the names are injective in the SMD's name (a
fixed suffix per purpose, or the SMD's own name), so two SMDs can never want the same object: SMD
`team` wants Role `team-viewer`, SMD `team-viewer` wants Role `team-viewer-viewer`.

The SMD's name is a DNS label of at most 45 characters (a CEL rule on the CRD), so `<name>-<purpose>`
always fits in 63 characters and names never need truncating.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from securemodels.api import v1alpha1

MANAGED_BY = "secure-model-operator"
FIELD_MANAGER = "securemodels"
PART_OF = MANAGED_BY
APP_NAME = "secure-model"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
CLIENT_COMPONENT = "mtls-client"
# Labels on objects without an ownerReference to the SMD: in other namespaces, where an ownerReference
# cannot point, and a retained volume, which garbage collection must not take with the SMD.
OWNER_NAMESPACE_LABEL = "securemodels.io/owner-namespace"
OWNER_NAME_LABEL = "securemodels.io/owner-name"
OWNER_UID_LABEL = "securemodels.io/owner-uid"

# Purposes of the children named <smd>-<purpose>, per kind.
TLS_PURPOSE = "tls"
SIDECAR_PURPOSE = "sidecar"
NETWORK_PURPOSE = "network"
VOLUME_PURPOSE = "models"
VIEWER = "viewer"
DEPLOYER = "deployer"
ACCESS_PURPOSES = (VIEWER, DEPLOYER)


@dataclass(frozen=True)
class Owner:
    """Identity of the SMD being reconciled."""

    name: str
    namespace: str
    uid: str
    generation: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def child(self, purpose: str) -> str:
        return f"{self.name}-{purpose}"

    def reference(self) -> dict[str, object]:
        return {
            "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
            "kind": v1alpha1.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True, order=True)
class ChildRef:
    """Where one object of an SMD lives."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Children:
    """Every object an SMD may write. The namespaced ones are listed whether the spec wants them now or
    not (a Role no longer wanted must be found to be removed); remote ones exist per declared client."""

    deployment: ChildRef
    service: ChildRef
    service_account: ChildRef
    sidecar_config: ChildRef
    tls_secret: ChildRef
    network_policy: ChildRef
    volume_claim: ChildRef
    roles: Mapping[str, ChildRef]  # purpose -> Role
    role_bindings: Mapping[str, ChildRef]  # purpose -> RoleBinding
    client_secrets: Mapping[str, ChildRef]  # client identity -> Secret in the client's namespace
    ca_bundles: Mapping[str, ChildRef]  # client namespace -> ConfigMap

    def local(self) -> Iterator[ChildRef]:
        """The objects in the SMD's namespace, owned through an ownerReference (the volume may be
        owned by label instead, when it is retained)."""
        yield from (
            self.service_account,
            self.tls_secret,
            self.sidecar_config,
            self.network_policy,
            *self.roles.values(),
            *self.role_bindings.values(),
            self.volume_claim,
            self.service,
            self.deployment,
        )

    def remote(self) -> Iterator[ChildRef]:
        yield from (*self.client_secrets.values(), *self.ca_bundles.values())

    def wanted(self, spec: v1alpha1.SecureModelDeploymentSpec) -> Iterator[ChildRef]:
        """The objects the spec needs now: a name someone else holds blocks the SMD only among these."""
        yield from (
            self.service_account,
            self.tls_secret,
            self.sidecar_config,
            self.network_policy,
            self.service,
            self.deployment,
        )
        for purpose, subjects in ((VIEWER, spec.access.viewers), (DEPLOYER, spec.access.deployers)):
            if subjects:
                yield from (self.roles[purpose], self.role_bindings[purpose])
        if spec.storage is not None:
            yield self.volume_claim
        yield from self.remote()


def client_identity(name: str, namespace: str) -> str:
    """A client certificate's CN, and the name the sidecar's allow-list admits."""
    return f"{name}.{namespace}"


def children(owner: Owner, spec: v1alpha1.SecureModelDeploymentSpec) -> Children:
    here = owner.namespace

    def local(kind: str, name: str) -> ChildRef:
        return ChildRef(kind, here, name)

    clients = spec.mtls.clients
    return Children(
        deployment=local("Deployment", owner.name),
        service=local("Service", owner.name),
        service_account=local("ServiceAccount", owner.name),
        sidecar_config=local("ConfigMap", owner.child(SIDECAR_PURPOSE)),
        tls_secret=local("Secret", owner.child(TLS_PURPOSE)),
        network_policy=local("NetworkPolicy", owner.child(NETWORK_PURPOSE)),
        volume_claim=local("PersistentVolumeClaim", owner.child(VOLUME_PURPOSE)),
        roles={purpose: local("Role", owner.child(purpose)) for purpose in ACCESS_PURPOSES},
        role_bindings={purpose: local("RoleBinding", owner.child(purpose)) for purpose in ACCESS_PURPOSES},
        # Unambiguous across SMDs: SMD names and namespaces are DNS labels, so the dots separate them.
        client_secrets={
            client_identity(client.name, client.namespace): ChildRef(
                "Secret", client.namespace, f"{owner.name}.{owner.namespace}.client-{client.name}"
            )
            for client in clients
        },
        ca_bundles={
            namespace: ChildRef("ConfigMap", namespace, f"{owner.name}.{owner.namespace}.ca-bundle")
            for namespace in sorted({client.namespace for client in clients})
        },
    )


# The labels the operator puts on what it writes: watches select its objects by them, so they are part of
# what is compared (an object stripped of them would drop out of the caches unseen).
OPERATOR_LABEL_KEYS = frozenset(
    {
        "app.kubernetes.io/name",
        INSTANCE_LABEL,
        COMPONENT_LABEL,
        MANAGED_BY_LABEL,
        "app.kubernetes.io/part-of",
        OWNER_NAMESPACE_LABEL,
        OWNER_NAME_LABEL,
        OWNER_UID_LABEL,
    }
)


def selector_labels(owner: Owner) -> dict[str, str]:
    """The immutable subset used by Deployment and Service selectors."""
    return {"app.kubernetes.io/name": APP_NAME, INSTANCE_LABEL: owner.name}


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        **selector_labels(owner),
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }


def owner_labels(owner: Owner) -> dict[str, str]:
    """Who owns an object that carries no ownerReference to its SMD."""
    return {
        OWNER_NAMESPACE_LABEL: owner.namespace,
        OWNER_NAME_LABEL: owner.name,
        OWNER_UID_LABEL: owner.uid,
    }


def metadata(owner: Owner, ref: ChildRef, component: str, *, owned: bool = True) -> dict[str, object]:
    """Metadata of a child. Objects in the SMD's namespace carry an ownerReference, so garbage collection
    removes them with it, unless `owned` is False (a volume that outlives the SMD); objects elsewhere
    and unowned ones are tracked by owner labels."""
    remote = ref.namespace != owner.namespace
    found: dict[str, object] = {
        "name": ref.name,
        "namespace": ref.namespace,
        "labels": {**labels(owner, component), **(owner_labels(owner) if remote or not owned else {})},
    }
    if owned and not remote:
        found["ownerReferences"] = [owner.reference()]
    return found


def owned_by(item: Mapping[str, object] | None, owner: Owner, ref: ChildRef) -> bool:
    """Whether the live object at `ref` is this SMD's own: its controller reference names the SMD's uid,
    or, where no ownerReference can be (another namespace) or must be (a retained volume), its owner
    label does. An object with our name and anything else is someone else's."""
    if item is None:
        return False
    metadata = item.get("metadata")
    if not isinstance(metadata, Mapping):
        return False
    references = metadata.get("ownerReferences") or []
    if any(
        isinstance(entry, Mapping) and entry.get("uid") == owner.uid and entry.get("controller")
        for entry in references
    ):
        return True
    if ref.namespace != owner.namespace or ref.kind == "PersistentVolumeClaim":
        item_labels = metadata.get("labels") or {}
        return isinstance(item_labels, Mapping) and item_labels.get(OWNER_UID_LABEL) == owner.uid
    return False


# The operator's own objects, in its namespace: its CA, the ledger of the CAs it made, and the key that
# stamps what it writes. Only these are read there: the operator watches them by name.
CA_SECRET = "securemodels-ca"  # noqa: S105 - the Secret's name
CA_LEDGER = "securemodels-ca-ledger"
STAMP_KEY_SECRET = "securemodels-stamp-key"  # noqa: S105 - the Secret's name
OWN_OBJECTS = (("Secret", CA_SECRET), ("Secret", STAMP_KEY_SECRET), ("ConfigMap", CA_LEDGER))


def operator_labels(component: str) -> dict[str, str]:
    """Labels of the operator's own objects, such as its CA Secret."""
    return {
        "app.kubernetes.io/name": MANAGED_BY,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }

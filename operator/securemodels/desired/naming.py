"""Names, labels and owner references of the objects an SMD owns (DESIGN §7).

The SMD's name is a DNS label of at most 45 characters (a CEL rule on the CRD), so `<name>-<purpose>`
always fits in 63 characters and names never need truncating.
"""

from __future__ import annotations

from dataclasses import dataclass

from securemodels.api import v1alpha1

MANAGED_BY = "secure-model-operator"
FIELD_MANAGER = "securemodels"
PART_OF = MANAGED_BY
APP_NAME = "secure-model"
# Labels on objects outside the SMD's namespace, where an ownerReference cannot point.
OWNER_NAMESPACE_LABEL = "securemodels.io/owner-namespace"
OWNER_NAME_LABEL = "securemodels.io/owner-name"
OWNER_UID_LABEL = "securemodels.io/owner-uid"


@dataclass(frozen=True)
class Owner:
    """Identity of the SMD being reconciled."""

    name: str
    namespace: str
    uid: str
    generation: int = 0

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


def selector_labels(owner: Owner) -> dict[str, str]:
    """The immutable subset used by Deployment and Service selectors."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": owner.name}


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        **selector_labels(owner),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }


def metadata(owner: Owner, name: str, component: str) -> dict[str, object]:
    """Metadata of a child in the SMD's namespace, owned through an ownerReference."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
    }


def remote_metadata(owner: Owner, name: str, namespace: str, component: str) -> dict[str, object]:
    """Metadata of an object in another namespace: tracked by labels, removed by the operator."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            **labels(owner, component),
            OWNER_NAMESPACE_LABEL: owner.namespace,
            OWNER_NAME_LABEL: owner.name,
            OWNER_UID_LABEL: owner.uid,
        },
    }


def owned_selector(owner: Owner) -> dict[str, str]:
    """Labels that select everything this SMD owns in its namespace."""
    return {"app.kubernetes.io/instance": owner.name, "app.kubernetes.io/managed-by": MANAGED_BY}


def operator_labels(component: str) -> dict[str, str]:
    """Labels of the operator's own objects, such as its CA Secret."""
    return {
        "app.kubernetes.io/name": MANAGED_BY,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }

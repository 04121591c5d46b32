"""Pure builders: from a spec (and facts the handler read) to the objects the cluster should hold.

Nothing here does I/O or imports kopf or a Kubernetes client; every function is a plain transformation
that unit tests can call directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from securemodels.desired.controls import mtls, network, rbac, storage
from securemodels.desired.model import Context, Manifest
from securemodels.desired.naming import ChildRef
from securemodels.desired.workload import deployment
from securemodels.pki import KeyPair

DESIRED_HASH_ANNOTATION = "securemodels.io/desired-hash"


def stamp(manifest: Manifest) -> Manifest:
    """Annotate the object with a hash of what the operator wants it to be.

    A live object whose stamp matches ours but whose fields differ from what the server made of our
    request was changed by someone else (drift); a different stamp means the operator's own intent
    changed (new spec, renewed certificate).
    """
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), DESIRED_HASH_ANNOTATION: digest}
    return {**manifest, "metadata": metadata}


def desired_hash(manifest: Manifest | None) -> str | None:
    annotations: dict[str, Any] = ((manifest or {}).get("metadata") or {}).get("annotations") or {}
    found = annotations.get(DESIRED_HASH_ANNOTATION)
    return str(found) if found is not None else None


def ref_of(manifest: Manifest) -> ChildRef:
    metadata = manifest["metadata"]
    return ChildRef(manifest["kind"], metadata["namespace"], metadata["name"])


@dataclass(frozen=True)
class Desired:
    owned: tuple[Manifest, ...]  # in the SMD's namespace, in write order (the Deployment last)
    remote: tuple[Manifest, ...]  # client Secrets and CA bundles in the clients' namespaces

    def by_ref(self) -> dict[ChildRef, Manifest]:
        return {ref_of(item): item for item in (*self.owned, *self.remote)}


def build(context: Context, server: mtls.ServerTLS, clients: Mapping[str, KeyPair]) -> Desired:
    """Every object for the SMD. `clients` maps a client identity to its certificate; clients whose
    namespace is missing are left out so the others still get theirs."""
    owned: list[Manifest] = [
        rbac.service_account(context),
        mtls.tls_secret(context, server),
        mtls.sidecar_config_map(context),
        network.network_policy(context),
        *rbac.roles_and_bindings(context),
    ]
    if (claim := storage.persistent_volume_claim(context)) is not None:
        owned.append(claim)
    owned += [mtls.service(context), deployment(context, server)]

    remote: list[Manifest] = []
    delivered = [
        client
        for client in context.spec.mtls.clients
        if context.facts.delivers_to(client.namespace) and mtls.client_identity(client) in clients
    ]
    for client in delivered:
        remote.append(
            mtls.client_secret(context, client, clients[mtls.client_identity(client)], server.bundle_pem)
        )
    for namespace in sorted({client.namespace for client in delivered}):
        remote.append(mtls.ca_bundle_config_map(context, namespace, server.bundle_pem))
    return Desired(tuple(stamp(item) for item in owned), tuple(stamp(item) for item in remote))


def referenced_objects(context: Context) -> list[tuple[str, str]]:
    """(kind, name) of the ConfigMaps and Secrets the model container reads."""
    model = context.spec.model
    found = {("ConfigMap", item.value_from.config_map_key_ref.name) for item in model.env if item.value_from}
    found |= {("Secret", item.secret_name) for item in model.secret_files}
    return sorted(found)

"""Confused deputy: people who may change an SMD try to make the operator do, for them, what they may not.

The operator holds far more than any deployer: it reads Secrets, writes Secrets into other namespaces,
binds Roles, opens NetworkPolicies and deletes volumes. A deployer, who may only get, update and patch one
SMD, tries to borrow those rights through the spec: mounting a Secret or ConfigMap they cannot read,
having a client certificate delivered where they please, granting themselves access, widening what may
reach the model or what it may reach, opting out of a control, dropping a constraint someone else set,
giving the SMD an owner whose deletion would take it away, or having the operator delete the model's
volume. Each attempt is made by update and by create, and must be refused by the chart's admission
policy with a message naming the field; beside it, the same user succeeds once given the permission the
field stands for.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from support.access import RBAC, AdmissionPolicy, Impersonated, bind_cluster_role, grant, smd_rule
from support.kube import Kubectl, wait_for
from support.manifests import merge, smd

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {"model": {"replicas": 1}}


def _refused(result: subprocess.CompletedProcess[str], field_name: str) -> str:
    """The refusal, checked to come from the admission policy and to name the field."""
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert "cannot " not in result.stderr, f"refused by RBAC, not by the policy: {result.stderr}"
    assert field_name in result.stderr, f"the refusal does not name {field_name}: {result.stderr}"
    return result.stderr


def _accepted(attempt: Callable[[], subprocess.CompletedProcess[str]], what: str) -> None:
    """RBAC grants reach the authorizer within moments: try again until then."""
    last: list[str] = []

    def probe() -> bool:
        result = attempt()
        last[:] = [result.stderr]
        return result.returncode == 0

    try:
        wait_for(probe, timeout=15, interval=0.5, what=what)
    except AssertionError as error:
        raise AssertionError(f"{what} was still refused once permitted: {last}") from error


def _wait_can(kubectl: Kubectl, user: str, verb: str, resource: str, namespace: str) -> None:
    wait_for(
        lambda: (
            kubectl.run("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}").stdout.strip()
            == "yes"
        ),
        timeout=15,
        what=f"{user} may {verb} {resource}",
    )


def _create(user: Impersonated, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return user.run("create", "-f", "-", stdin=yaml.safe_dump(manifest))


@dataclass
class Scene:
    """A namespace with the SMD `m`, made by an admin, and a deployer of it who may also create SMDs."""

    kubectl: Kubectl
    namespace: str
    user: str = field(default_factory=lambda: f"mallory-{uuid.uuid4().hex[:6]}")

    @property
    def attacker(self) -> Impersonated:
        return Impersonated(self.kubectl, self.user)

    def allow(self, rules: list[dict[str, Any]], namespace: str | None = None) -> None:
        grant(self.kubectl, self.user, namespace or self.namespace, rules)

    def update(self, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.attacker.patch("smd", "m", self.namespace, json.dumps(body))

    def create(
        self, name: str, spec: dict[str, Any], metadata: dict[str, Any]
    ) -> subprocess.CompletedProcess[str]:
        manifest = smd(name, self.namespace, **merge(BASE, spec))
        manifest["metadata"].update(metadata)
        return _create(self.attacker, manifest)


@pytest.fixture
def scene(kubectl: Kubectl, namespace: str, admission_policy: AdmissionPolicy) -> Scene:
    kubectl.apply(smd("m", namespace, **BASE))
    found = Scene(kubectl, namespace)
    found.allow([smd_rule(["get", "update", "patch"], ["m"]), smd_rule(["create"])])
    return found


# -------------------------------------------------------------------------------------- the attempts


def _secret(scene: Scene) -> dict[str, Any]:
    scene.kubectl(
        "create", "secret", "generic", "db-creds", "--from-literal=password=hunter2", "-n", scene.namespace
    )
    return {"model": {"secretFiles": [{"name": "db", "secretName": "db-creds"}]}}


def _config_map(scene: Scene) -> dict[str, Any]:
    scene.kubectl(
        "create", "configmap", "flags", "--from-literal=url=https://internal", "-n", scene.namespace
    )
    return {
        "model": {"env": [{"name": "URL", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "url"}}}]}
    }


WEIGHTS_IMAGE = "registry.example.com/ml/fraud-weights@sha256:" + "cd" * 32


def _signed_weights(key_config_map: str) -> dict[str, Any]:
    signature = {"publicKey": {"name": key_config_map, "key": "key.pem"}}
    return {"model": {"weights": {"image": WEIGHTS_IMAGE, "signature": signature}}}


def _signing_key(scene: Scene) -> dict[str, Any]:
    """A ConfigMap the attacker may not read: the operator would read it, and show its digest."""
    scene.kubectl("create", "configmap", "signer", "--from-literal=key.pem=not-a-key", "-n", scene.namespace)
    return _signed_weights("signer")


def _own_client_namespace(scene: Scene) -> dict[str, Any]:
    """A namespace the attacker controls, as editor: they could create Secrets there themselves."""
    own = f"{scene.namespace}-own"
    scene.kubectl("create", "namespace", own)
    bind_cluster_role(scene.kubectl, scene.user, "edit", own)
    return {"mtls": {"clients": [{"name": "spy", "namespace": own}]}}


def _self_as(role: str) -> Callable[[Scene], dict[str, Any]]:
    return lambda scene: {"access": {role: [{"kind": "User", "name": scene.user}]}}


def _fixed(spec: dict[str, Any]) -> Callable[[Scene], dict[str, Any]]:
    return lambda scene: spec


def _verbs(*verbs: str) -> Callable[[Scene], None]:
    return lambda scene: scene.allow([smd_rule(list(verbs))])


def _read(resource: str, name: str) -> Callable[[Scene], None]:
    return lambda scene: scene.allow(
        [{"apiGroups": [""], "resources": [resource], "resourceNames": [name], "verbs": ["get"]}]
    )


def _viewer_rights(scene: Scene) -> None:
    scene.allow(
        [
            smd_rule(["grant", "get", "list", "watch"]),
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]
    )


def _delete_claims(scene: Scene) -> None:
    """Deleting the model's data: the requester's own right to delete claims, and to weaken."""
    scene.allow(
        [
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["delete"]},
            smd_rule(["weaken"]),
        ]
    )


@dataclass(frozen=True)
class Attempt:
    names: str  # what the refusal must name
    spec: Callable[[Scene], dict[str, Any]]  # what the attacker asks for (and what it refers to)
    permit: Callable[[Scene], None]  # the permission that makes the request legitimate
    owner: bool = False  # the request gives the SMD an owner


ATTEMPTS = {
    "mount-a-secret-they-cannot-read": Attempt(
        "spec.model.secretFiles", _secret, _read("secrets", "db-creds")
    ),
    "read-a-config-map-they-cannot-read": Attempt(
        "spec.model.env", _config_map, _read("configmaps", "flags")
    ),
    "name-a-signing-key-they-cannot-read": Attempt(
        "spec.model.weights.signature", _signing_key, _read("configmaps", "signer")
    ),
    "deliver-a-client-certificate-to-their-namespace": Attempt(
        "spec.mtls.clients", _own_client_namespace, _verbs("grant")
    ),
    "add-themselves-as-deployer": Attempt(
        "spec.access", _self_as("deployers"), _verbs("grant", "get", "update", "patch")
    ),
    "add-themselves-as-viewer": Attempt("spec.access", _self_as("viewers"), _viewer_rights),
    "admit-ingress-from-their-namespace": Attempt(
        "spec.network",
        _fixed(
            {
                "network": {
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "attackers"}}}]}]
                }
            }
        ),
        _verbs("grant"),
    ),
    "open-egress-to-their-server": Attempt(
        "spec.network",
        _fixed({"network": {"egress": [{"to": [{"cidr": "203.0.113.0/24"}], "ports": [{"port": 443}]}]}}),
        _verbs("grant"),
    ),
    "open-the-plain-metrics-port": Attempt(
        "spec.model.metricsPort", _fixed({"model": {"metricsPort": 9090}}), _verbs("grant")
    ),
    "accept-tls-1-2": Attempt(
        "spec.mtls.minTLSVersion", _fixed({"mtls": {"minTLSVersion": "1.2"}}), _verbs("weaken")
    ),
    "accept-ingress-from-anywhere": Attempt(
        "spec.network.allowIngressFromAnywhere",
        _fixed({"network": {"allowIngressFromAnywhere": True}}),
        _verbs("weaken"),
    ),
    "allow-egress-to-anywhere": Attempt(
        "spec.network.allowEgressToAnywhere",
        _fixed({"network": {"allowEgressToAnywhere": True}}),
        _verbs("weaken"),
    ),
    "have-the-operator-delete-the-volume": Attempt(
        "spec.persistentVolumeClaimRetentionPolicy",
        _fixed(
            {
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Delete",
                    "whenStorageRemoved": "Delete",
                }
            }
        ),
        _delete_claims,
    ),
    "silence-the-access-log": Attempt(
        "spec.serving.accessLog", _fixed({"serving": {"accessLog": False}}), _verbs("weaken")
    ),
    "pick-another-container-runtime": Attempt(
        "spec.scheduling.runtimeClassName",
        _fixed({"scheduling": {"runtimeClassName": "runc-debug"}}),
        _verbs("weaken"),
    ),
    "run-on-the-control-plane": Attempt(
        "spec.scheduling.tolerations",
        _fixed(
            {
                "scheduling": {
                    "tolerations": [
                        {
                            "key": "node-role.kubernetes.io/control-plane",
                            "operator": "Exists",
                            "effect": "NoSchedule",
                        }
                    ]
                }
            }
        ),
        _verbs("weaken"),
    ),
    "preempt-the-cluster-with-a-system-priority": Attempt(
        "spec.scheduling.priorityClassName",
        _fixed({"scheduling": {"priorityClassName": "system-node-critical"}}),
        _verbs("weaken"),
    ),
    "give-the-smd-an-owner": Attempt("metadata.ownerReferences", _fixed({}), _verbs("set-owner"), owner=True),
}


def _owner_of(scene: Scene) -> dict[str, Any]:
    """metadata naming an owner: a ConfigMap whose deletion would take the SMD with it."""
    name = f"owner-{uuid.uuid4().hex[:5]}"
    scene.kubectl("create", "configmap", name, "-n", scene.namespace)
    uid = scene.kubectl.get("configmap", name, scene.namespace)["metadata"]["uid"]
    return {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid}]}


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_a_deployer_is_refused_what_they_may_not_do_themselves_until_permitted(
    scene: Scene, attempt: str
) -> None:
    chosen = ATTEMPTS[attempt]
    spec = chosen.spec(scene)
    metadata = _owner_of(scene) if chosen.owner else {}
    body: dict[str, Any] = {
        **({"spec": spec} if spec else {}),
        **({"metadata": metadata} if metadata else {}),
    }

    before = scene.kubectl.get("smd", "m", scene.namespace)["metadata"]["resourceVersion"]

    _refused(scene.update(body), chosen.names)
    _refused(scene.create("fresh", spec, metadata), chosen.names)
    assert scene.kubectl.get("smd", "m", scene.namespace)["metadata"]["resourceVersion"] == before
    assert scene.kubectl.get("smd", "fresh", scene.namespace) is None

    chosen.permit(scene)

    _accepted(lambda: scene.update(body), f"{attempt} by update")
    _accepted(lambda: scene.create("fresh", spec, metadata), f"{attempt} by create")


def test_a_client_certificate_goes_to_kube_system_only_with_grant_and_that_namespaces_consent(
    kubectl: Kubectl, namespace: str, admission_policy: AdmissionPolicy
) -> None:
    kubectl.apply(smd("m", namespace, **BASE))
    admin = Scene(kubectl, namespace)
    admin.allow([smd_rule(["get", "update", "patch"], ["m"])])
    body = {"spec": {"mtls": {"clients": [{"name": "kubelet", "namespace": "kube-system"}]}}}

    _refused(admin.update(body), "spec.mtls.clients")  # a deployer: no 'grant'
    bind_cluster_role(kubectl, admin.user, admission_policy.security_admin, namespace)
    _wait_can(kubectl, admin.user, "grant", "securemodeldeployments.securemodels.io/m", namespace)
    refusal = _refused(admin.update(body), "spec.mtls.clients")  # a security admin, not kube-system's
    assert "clientcertificates" in refusal

    consent = f"consent-{uuid.uuid4().hex[:5]}"
    kubectl.apply(
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": consent, "namespace": "kube-system"},
            "roleRef": {
                "apiGroup": RBAC,
                "kind": "ClusterRole",
                "name": admission_policy.client_certificates,
            },
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": admin.user}],
        }
    )
    try:
        _accepted(lambda: admin.update(body), "a client in kube-system once kube-system consents")
    finally:
        kubectl("delete", "rolebinding", consent, "-n", "kube-system")


def test_a_security_admin_without_pod_rights_may_not_make_anyone_a_viewer(
    kubectl: Kubectl, namespace: str, admission_policy: AdmissionPolicy
) -> None:
    kubectl.apply(smd("m", namespace, **BASE))
    admin = Scene(kubectl, namespace)
    bind_cluster_role(kubectl, admin.user, admission_policy.security_admin, namespace)
    body = {"spec": {"access": {"viewers": [{"kind": "Group", "name": "auditors"}]}}}
    _accepted(
        lambda: admin.update({"spec": {"access": {"deployers": [{"kind": "User", "name": "alice"}]}}}),
        "a deployer",
    )

    refusal = _refused(admin.update(body), "spec.access.viewers")
    assert "pods" in refusal

    admin.allow(
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]
    )
    _accepted(lambda: admin.update(body), "a viewer, once the admin holds what viewers get")


@pytest.mark.parametrize(
    ("constraint", "spec", "dropped"),
    [
        (
            "spec.residency",
            {"residency": {"regions": ["eu-west-1"]}},
            [{"op": "remove", "path": "/spec/residency"}],
        ),
        (
            "spec.imagePolicy.allowedRegistries",
            {"imagePolicy": {"allowedRegistries": ["registry.example.com"]}},
            [{"op": "replace", "path": "/spec/imagePolicy/allowedRegistries", "value": []}],
        ),
    ],
    ids=["residency", "registry-allow-list"],
)
def test_a_deployer_may_not_drop_a_constraint_a_security_admin_set_without_weaken(
    kubectl: Kubectl,
    namespace: str,
    admission_policy: AdmissionPolicy,
    constraint: str,
    spec: dict[str, Any],
    dropped: list[dict[str, Any]],
) -> None:
    kubectl.apply(smd("m", namespace, **merge(BASE, spec)))
    deployer = Scene(kubectl, namespace)
    deployer.allow([smd_rule(["get", "update", "patch"], ["m"])])
    _accepted(
        lambda: deployer.attacker.patch(
            "smd", "m", namespace, json.dumps({"spec": {"model": {"replicas": 2}}})
        ),
        "a deployer's ordinary change",
    )

    _refused(deployer.attacker.patch("smd", "m", namespace, json.dumps(dropped), "json"), constraint)
    assert (
        kubectl.get("smd", "m", namespace)["spec"].get(constraint.split(".")[1])
        == spec[constraint.split(".")[1]]
    )

    deployer.allow([smd_rule(["weaken"])])
    _accepted(
        lambda: deployer.attacker.patch("smd", "m", namespace, json.dumps(dropped), "json"), "with weaken"
    )


def test_a_deployer_may_not_point_an_existing_owner_reference_elsewhere(
    kubectl: Kubectl, namespace: str, admission_policy: AdmissionPolicy
) -> None:
    """Garbage collection deletes an object whose owner cannot be found: keeping the owner's uid while
    renaming the reference is enough to have the SMD, and the model with it, deleted."""
    kubectl("create", "configmap", "release", "-n", namespace)
    release = kubectl.get("configmap", "release", namespace)["metadata"]["uid"]
    manifest = smd("m", namespace, **BASE)
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "release", "uid": release}
    ]
    kubectl.apply(manifest)
    deployer = Scene(kubectl, namespace)
    deployer.allow([smd_rule(["get", "update", "patch"], ["m"])])
    renamed = [{"op": "replace", "path": "/metadata/ownerReferences/0/name", "value": "gone"}]

    _refused(
        deployer.attacker.patch("smd", "m", namespace, json.dumps(renamed), "json"),
        "metadata.ownerReferences",
    )
    assert kubectl.get("smd", "m", namespace)["metadata"]["ownerReferences"][0]["name"] == "release"

    deployer.allow([smd_rule(["set-owner"])])
    _accepted(
        lambda: deployer.attacker.patch("smd", "m", namespace, json.dumps(renamed), "json"), "with set-owner"
    )


def test_a_deployer_may_not_drop_the_weights_signature_without_weaken(
    kubectl: Kubectl, namespace: str, admission_policy: AdmissionPolicy
) -> None:
    """Without its signature the weights are served unverified, and the control passes as NotRequested."""
    kubectl("create", "configmap", "signer", "--from-literal=key.pem=not-a-key", "-n", namespace)
    kubectl.apply(smd("m", namespace, **merge(BASE, _signed_weights("signer"))))
    deployer = Scene(kubectl, namespace)
    # Any change of the spec needs the key readable by the requester, as for mounted Secrets.
    key = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["signer"], "verbs": ["get"]}
    deployer.allow([smd_rule(["get", "update", "patch"], ["m"]), key])
    dropped = json.dumps([{"op": "remove", "path": "/spec/model/weights/signature"}])
    _accepted(
        lambda: deployer.attacker.patch(
            "smd", "m", namespace, json.dumps({"spec": {"model": {"replicas": 2}}})
        ),
        "a deployer's ordinary change",
    )

    _refused(deployer.attacker.patch("smd", "m", namespace, dropped, "json"), "spec.model.weights.signature")
    assert "signature" in kubectl.get("smd", "m", namespace)["spec"]["model"]["weights"]

    deployer.allow([smd_rule(["weaken"])])
    _accepted(lambda: deployer.attacker.patch("smd", "m", namespace, dropped, "json"), "with weaken")

"""False Compliant: attacks on a model that is Ready and compliant, each of which must show.

Each attack is one move that someone with access to the model's namespace, or to cluster RBAC, could make:
tampering with an object the operator owns, hiding one from it, or adding objects of their own beside the
model (a grant to its account, a policy or Service that reaches it, a pod that acts like it). The operator
must report it in the control's status (naming the problem), in the compliance metric and in a Warning
Event; put back what it owns within one resync, keeping the Fail until the following one; and leave what
it does not own exactly as the attacker made it.

All attacks run at once, each against its own model in its own namespace, so the campaign waits for the
resyncs once; each test then reads what was seen of its own attack.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families

from security.attacks import (
    PINNED,
    RESTRICTED_CONTAINER,
    WITHIN_A_RESYNC,
    Model,
    all_smds,
    attacker_ca,
    delete_namespaces,
    fingerprint,
    fully_compliant,
    launch,
    model_pods,
    new_namespace,
    patch,
    restricted_pod,
    wait_blocked,
    wait_compliant,
)
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.operator import RESYNC_SECONDS, RunningOperator

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

RBAC = "rbac.authorization.k8s.io"
# Every model under attack declares viewers and deployers, so that its Roles and bindings can be attacked.
SPEC: dict[str, Any] = {
    "access": {
        "viewers": [{"kind": "Group", "name": "auditors"}],
        "deployers": [{"kind": "User", "name": "alice"}],
    }
}
# How long the campaign watches: an attack not reported this long after it was made never will be; one
# that was reported is watched until it passes again, up to the cap after the last strike.
GIVE_UP_SECONDS = 15.0
WATCH_SECONDS = 45.0
# A verdict is read at most this late by the campaign, which also shares the machine with the model
# pods it attacks: a detection or repair seen this much late is still on time.
SLACK = 6.0  # a loaded machine: the bound is "within a few resyncs", not a latency
OTHER_DIGEST = "registry.example.com/ml/fraud@sha256:" + "ef" * 32

Ref = tuple[str, str, str | None]  # kind, name, namespace (None: cluster-scoped)


@dataclass(frozen=True)
class Attack:
    """One move against a compliant model.

    `strike` makes it and returns the objects it created, which are the attacker's, not the operator's;
    `undone` says whether the change to an object the operator owns is gone again; `after` is what a
    defender does once the problem is reported (replacing a tampered pod), besides removing the
    attacker's objects.
    """

    group: str
    control: str
    names: str  # what the control's message must name
    strike: Callable[[Kubectl, Model], list[Ref]]
    undone: Callable[[Source, Model], bool] | None = None
    after: Callable[[Kubectl, Model], None] | None = None


@dataclass
class Seen:
    """What the campaign saw of one attack; times in seconds after the strike."""

    error: str | None = None
    # Each reading brackets a moment: `*_after` is when a reading first showed it, `not_*_at` when the
    # last reading that did not show it began. What happened lies in between.
    not_detected_at: float = 0.0
    detected_after: float | None = None
    verdict: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    metric_zero: bool = False
    event: dict[str, Any] | None = None
    not_undone_at: float | None = None
    undone_after: float | None = None
    foreign: dict[Ref, str | None] = field(default_factory=dict)
    foreign_changed: list[str] = field(default_factory=list)
    cleaned: bool = False
    passed_after: float | None = None
    last_ready: str = ""  # the SMD's phase and Ready reason at the last reading


# ------------------------------------------------------------------------------------------- the moves


class Source(Protocol):
    """Where an object is read from: the API server (kubectl), or one snapshot of it."""

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Any: ...


LIVE_KINDS = "deployments,services,networkpolicies,configmaps,secrets,serviceaccounts,roles,rolebindings"


@dataclass(frozen=True)
class Live:
    """The objects of the models under attack (all named m), all read at one moment in one list."""

    objects: dict[tuple[str, str, str], dict[str, Any]]

    @classmethod
    def read(cls, kubectl: Kubectl) -> Live:
        found = kubectl.get(LIVE_KINDS, None, None, "-A", "-l", "app.kubernetes.io/instance=m")
        return cls(
            {
                (item["kind"].lower(), item["metadata"]["namespace"], item["metadata"]["name"]): item
                for item in (found or {}).get("items") or []
            }
        )

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Any:
        return self.objects.get((kind, namespace or "", name or ""))


def _get(source: Source, kind: str, name: str, namespace: str) -> dict[str, Any]:
    found = source.get(kind, name, namespace)
    assert found is not None, f"{kind} {namespace}/{name} is missing"
    return dict(found)


def _template(source: Source, model: Model) -> dict[str, Any]:
    return dict(_get(source, "deployment", model.name, model.namespace)["spec"]["template"]["spec"])


def _container(pod_spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((item for item in pod_spec.get("containers") or [] if item["name"] == name), None)


def _template_patch(body: dict[str, Any]) -> Callable[[Kubectl, Model], list[Ref]]:
    def strike(kubectl: Kubectl, model: Model) -> list[Ref]:
        patch(
            kubectl,
            "deployment",
            model.name,
            model.namespace,
            {"spec": {"template": {"spec": body}}},
            "strategic",
        )
        return []

    return strike


def _template_lacks(key: str) -> Callable[[Source, Model], bool]:
    return lambda source, model: key not in _template(source, model)


def _remove_sidecar_and_pause(kubectl: Kubectl, model: Model) -> list[Ref]:
    body = {
        "spec": {
            "paused": True,
            "template": {"spec": {"containers": [{"name": "mtls-proxy", "$patch": "delete"}]}},
        }
    }
    patch(kubectl, "deployment", model.name, model.namespace, body, "strategic")
    return []


def _sidecar_back_and_unpaused(source: Source, model: Model) -> bool:
    deployment = _get(source, "deployment", model.name, model.namespace)
    spec = deployment["spec"]
    return not spec.get("paused") and _container(spec["template"]["spec"], "mtls-proxy") is not None


INIT_GRAB_KEY = {
    "initContainers": [
        {
            "name": "grab",
            "image": PINNED,
            "command": ["cat", "/tls/tls.key"],
            "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
            "volumeMounts": [{"name": "mtls-tls", "mountPath": "/tls", "readOnly": True}],
        }
    ]
}


def _model_container_lacks(key: str) -> Callable[[Source, Model], bool]:
    def undone(source: Source, model: Model) -> bool:
        container = _container(_template(source, model), "model") or {}
        return key not in container

    return undone


def _disk_volume(kubectl: Kubectl, model: Model) -> list[Ref]:
    body = {
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "containers": [{"name": "model", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
    }
    return _template_patch(body)(kubectl, model)


def _no_disk_volume(source: Source, model: Model) -> bool:
    return all(volume["name"] != "cache" for volume in _template(source, model).get("volumes") or [])


def _scale(kubectl: Kubectl, model: Model) -> list[Ref]:
    kubectl("scale", "deployment", model.name, "-n", model.namespace, "--replicas=3")
    return []


def _one_replica(source: Source, model: Model) -> bool:
    return bool(_get(source, "deployment", model.name, model.namespace)["spec"]["replicas"] == 1)


def _swap_image(kubectl: Kubectl, model: Model) -> list[Ref]:
    kubectl("set", "image", f"deployment/{model.name}", f"model={OTHER_DIGEST}", "-n", model.namespace)
    return []


def _image_back(source: Source, model: Model) -> bool:
    container = _container(_template(source, model), "model") or {}
    return container.get("image") != OTHER_DIGEST


def _policy_patch(body: Any, kind_of_patch: str = "merge") -> Callable[[Kubectl, Model], list[Ref]]:
    def strike(kubectl: Kubectl, model: Model) -> list[Ref]:
        patch(kubectl, "networkpolicy", f"{model.name}-network", model.namespace, body, kind_of_patch)
        return []

    return strike


def _policy(source: Source, model: Model) -> dict[str, Any]:
    return dict(_get(source, "networkpolicy", f"{model.name}-network", model.namespace)["spec"])


def _selects_model_again(source: Source, model: Model) -> bool:
    return bool(_policy(source, model)["podSelector"].get("matchLabels", {}).get("nothing") is None)


def _no_end_port(source: Source, model: Model) -> bool:
    return "endPort" not in json.dumps(_policy(source, model))


def _both_directions(source: Source, model: Model) -> bool:
    return sorted(_policy(source, model).get("policyTypes") or []) == ["Egress", "Ingress"]


def _no_ingress_rule(source: Source, model: Model) -> bool:
    return not _policy(source, model).get("ingress")


def _service_patch(body: Any, kind_of_patch: str = "merge") -> Callable[[Kubectl, Model], list[Ref]]:
    def strike(kubectl: Kubectl, model: Model) -> list[Ref]:
        patch(kubectl, "service", model.name, model.namespace, body, kind_of_patch)
        return []

    return strike


def _service(source: Source, model: Model) -> dict[str, Any]:
    return dict(_get(source, "service", model.name, model.namespace)["spec"])


def _edit_nginx_conf(kubectl: Kubectl, model: Model) -> list[Ref]:
    config = _get(kubectl, "configmap", f"{model.name}-sidecar", model.namespace)
    text = config["data"]["nginx.conf"].replace("ssl_verify_client on;", "ssl_verify_client optional_no_ca;")
    patch(kubectl, "configmap", f"{model.name}-sidecar", model.namespace, {"data": {"nginx.conf": text}})
    return []


def _nginx_conf_verifies(source: Source, model: Model) -> bool:
    config = _get(source, "configmap", f"{model.name}-sidecar", model.namespace)
    return "ssl_verify_client on;" in config["data"]["nginx.conf"]


ATTACKER_CA = attacker_ca().certificate_pem


def _swap_trust_bundle(kubectl: Kubectl, model: Model) -> list[Ref]:
    encoded = base64.b64encode(ATTACKER_CA).decode()
    patch(kubectl, "secret", f"{model.name}-tls", model.namespace, {"data": {"ca.crt": encoded}})
    return []


def _trust_bundle_back(source: Source, model: Model) -> bool:
    secret = _get(source, "secret", f"{model.name}-tls", model.namespace)
    encoded = base64.b64encode(ATTACKER_CA).decode()
    return bool(secret["data"].get("ca.crt") != encoded)


def _mount_token(kubectl: Kubectl, model: Model) -> list[Ref]:
    patch(kubectl, "serviceaccount", model.name, model.namespace, {"automountServiceAccountToken": True})
    return []


def _token_off(source: Source, model: Model) -> bool:
    account = _get(source, "serviceaccount", model.name, model.namespace)
    return account.get("automountServiceAccountToken") is False


def _widen_viewer_role(kubectl: Kubectl, model: Model) -> list[Ref]:
    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
    patch(
        kubectl,
        "role",
        f"{model.name}-viewer",
        model.namespace,
        [{"op": "add", "path": "/rules/-", "value": rule}],
        "json",
    )
    return []


def _viewer_role_narrow(source: Source, model: Model) -> bool:
    role = _get(source, "role", f"{model.name}-viewer", model.namespace)
    return "secrets" not in json.dumps(role["rules"])


def _add_deployer(kubectl: Kubectl, model: Model) -> list[Ref]:
    subject = {"apiGroup": RBAC, "kind": "User", "name": "mallory"}
    body = [{"op": "add", "path": "/subjects/-", "value": subject}]
    patch(kubectl, "rolebinding", f"{model.name}-deployer", model.namespace, body, "json")
    return []


def _deployers_as_declared(source: Source, model: Model) -> bool:
    binding = _get(source, "rolebinding", f"{model.name}-deployer", model.namespace)
    return "mallory" not in json.dumps(binding["subjects"])


# Hiding an owned object from the operator.


def _unlabel(kind: str, name: str, model: Model, kubectl: Kubectl) -> None:
    """Take the operator's label off its object, and give the operator time to have looked at it."""
    kubectl("label", kind, name, "-n", model.namespace, "app.kubernetes.io/managed-by-")
    time.sleep(2 * RESYNC_SECONDS)


def _unlabel_tls_secret_then_swap_trust(kubectl: Kubectl, model: Model) -> list[Ref]:
    _unlabel("secret", f"{model.name}-tls", model, kubectl)
    return _swap_trust_bundle(kubectl, model)


def _trust_bundle_back_and_labelled(source: Source, model: Model) -> bool:
    secret = _get(source, "secret", f"{model.name}-tls", model.namespace)
    labelled = "app.kubernetes.io/managed-by" in (secret["metadata"].get("labels") or {})
    return labelled and _trust_bundle_back(source, model)


def _unlabel_deployment_then_drop_sidecar(kubectl: Kubectl, model: Model) -> list[Ref]:
    _unlabel("deployment", model.name, model, kubectl)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "mtls-proxy", "$patch": "delete"}]}}}}
    patch(kubectl, "deployment", model.name, model.namespace, body, "strategic")
    return []


def _sidecar_back(source: Source, model: Model) -> bool:
    return _container(_template(source, model), "mtls-proxy") is not None


def _freeze_sidecar_config(kubectl: Kubectl, model: Model) -> list[Ref]:
    patch(kubectl, "configmap", f"{model.name}-sidecar", model.namespace, {"immutable": True})
    return []


def _sidecar_config_mutable(source: Source, model: Model) -> bool:
    return not _get(source, "configmap", f"{model.name}-sidecar", model.namespace).get("immutable")


# Grants to the model's account.


def _binding(
    kind: str,
    name: str,
    role_kind: str,
    role: str,
    subject: dict[str, Any],
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
        "subjects": [subject],
    }


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _cluster_admin_to_account_user_name(kubectl: Kubectl, model: Model) -> list[Ref]:
    name = _unique("attack-user")
    subject = {
        "apiGroup": RBAC,
        "kind": "User",
        "name": f"system:serviceaccount:{model.namespace}:{model.name}",
    }
    kubectl.apply(_binding("ClusterRoleBinding", name, "ClusterRole", "cluster-admin", subject))
    return [("clusterrolebinding", name, None)]


def _cluster_admin_to_namespace_group_as_a_default(kubectl: Kubectl, model: Model) -> list[Ref]:
    name = _unique("system-defaults")
    subject = {"apiGroup": RBAC, "kind": "Group", "name": f"system:serviceaccounts:{model.namespace}"}
    labels = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    kubectl.apply(
        _binding("ClusterRoleBinding", name, "ClusterRole", "cluster-admin", subject, labels=labels)
    )
    return [("clusterrolebinding", name, None)]


def _aggregated_cluster_role(kubectl: Kubectl, model: Model) -> list[Ref]:
    label = f"attack.example.com/{uuid.uuid4().hex[:6]}"
    aggregate, piece = _unique("aggregate"), _unique("piece")
    account = {"kind": "ServiceAccount", "name": model.name, "namespace": model.namespace}
    kubectl.apply(
        [
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": aggregate},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]},
                "rules": [],
            },
            _binding("RoleBinding", "innocent", "ClusterRole", aggregate, account, model.namespace),
        ]
    )
    # Only later does the aggregated role gain a rule, from a role that names nobody.
    kubectl.apply(
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": piece, "labels": {label: "true"}},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        }
    )
    return [
        ("clusterrole", aggregate, None),
        ("clusterrole", piece, None),
        ("rolebinding", "innocent", model.namespace),
    ]


def _role_for_account(rules: list[dict[str, Any]]) -> Callable[[Kubectl, Model], list[Ref]]:
    def strike(kubectl: Kubectl, model: Model) -> list[Ref]:
        account = {"kind": "ServiceAccount", "name": model.name, "namespace": model.namespace}
        kubectl.apply(
            [
                {
                    "apiVersion": f"{RBAC}/v1",
                    "kind": "Role",
                    "metadata": {"name": "helper", "namespace": model.namespace},
                    "rules": rules,
                },
                _binding("RoleBinding", "helper", "Role", "helper", account, model.namespace),
            ]
        )
        return [("role", "helper", model.namespace), ("rolebinding", "helper", model.namespace)]

    return strike


def _secrets_of_another_namespace(kubectl: Kubectl, model: Model) -> list[Ref]:
    other = new_namespace(kubectl, "fc-vault")
    account = {"kind": "ServiceAccount", "name": model.name, "namespace": model.namespace}
    kubectl.apply(
        [
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "Role",
                "metadata": {"name": "reader", "namespace": other},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
            },
            _binding("RoleBinding", "reader", "Role", "reader", account, other),
        ]
    )
    return [("rolebinding", "reader", other), ("role", "reader", other), ("namespace", other, None)]


# Foreign policies and Services.


def _allow_all_by_template_hash(kubectl: Kubectl, model: Model) -> list[Ref]:
    pod = model_pods(kubectl, model)[0]
    pod_hash = pod["metadata"]["labels"]["pod-template-hash"]
    kubectl.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-by-hash", "namespace": model.namespace},
            "spec": {
                "podSelector": {"matchLabels": {"pod-template-hash": pod_hash}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{}],
                "egress": [{}],
            },
        }
    )
    return [("networkpolicy", "allow-by-hash", model.namespace)]


def _node_port_to_the_plain_port(kubectl: Kubectl, model: Model) -> list[Ref]:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "expose", "namespace": model.namespace},
            "spec": {
                "type": "NodePort",
                "selector": {"app.kubernetes.io/instance": model.name},
                "ports": [{"port": 8080, "targetPort": 8080}],
            },
        }
    )
    return [("service", "expose", model.namespace)]


# Pods that are not the model's but act like it.

MODEL_LABELS = {"app.kubernetes.io/name": "secure-model"}


def _pod(name: str, **options: Any) -> Callable[[Kubectl, Model], list[Ref]]:
    def strike(kubectl: Kubectl, model: Model) -> list[Ref]:
        settings = dict(options)
        if settings.pop("model_labels", False):
            settings["labels"] = {**MODEL_LABELS, "app.kubernetes.io/instance": model.name}
        if settings.pop("model_account", False):
            settings["service_account"] = model.name
        secret = f"{model.name}-tls"
        how = settings.pop("tls", None)
        if how == "volume":
            settings["volumes"] = [{"name": "tls", "secret": {"secretName": secret}}]
            settings["mounts"] = [{"name": "tls", "mountPath": "/tls"}]
        elif how == "projected":
            settings["volumes"] = [{"name": "tls", "projected": {"sources": [{"secret": {"name": secret}}]}}]
            settings["mounts"] = [{"name": "tls", "mountPath": "/tls"}]
        elif how == "env":
            settings["env"] = [
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "tls.key"}}}
            ]
        kubectl.apply(restricted_pod(name, model.namespace, **settings))
        return [("pod", name, model.namespace)]

    return strike


def _stray_replica_set(kubectl: Kubectl, model: Model) -> list[Ref]:
    labels = {**MODEL_LABELS, "app.kubernetes.io/instance": model.name, "stray": "yes"}
    template = restricted_pod("unused", model.namespace, labels=labels)
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{model.name}-stray",
                "namespace": model.namespace,
                "labels": {"stray": "yes"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
            },
        }
    )
    return [("replicaset", f"{model.name}-stray", model.namespace)]


# Tampering with a running pod of the model.


def _the_pod(kubectl: Kubectl, model: Model) -> str:
    pods = model_pods(kubectl, model)
    assert len(pods) == 1, [pod["metadata"]["name"] for pod in pods]
    return str(pods[0]["metadata"]["name"])


def _debug_container(kubectl: Kubectl, model: Model) -> list[Ref]:
    debug = {
        "name": "debugger",
        "image": PINNED,
        "command": ["sh"],
        "stdin": True,
        "tty": True,
        "securityContext": RESTRICTED_CONTAINER,
    }
    body = {"spec": {"ephemeralContainers": [debug]}}
    kubectl(
        "patch",
        "pod",
        _the_pod(kubectl, model),
        "-n",
        model.namespace,
        "--subresource=ephemeralcontainers",
        "--type=strategic",
        "-p",
        json.dumps(body),
    )
    return []


def _swap_pod_image(kubectl: Kubectl, model: Model) -> list[Ref]:
    kubectl("set", "image", f"pod/{_the_pod(kubectl, model)}", f"model={OTHER_DIGEST}", "-n", model.namespace)
    return []


RELABELLED = "app.kubernetes.io/instance=decoy"


def _relabel_pod(kubectl: Kubectl, model: Model) -> list[Ref]:
    kubectl("label", "pod", _the_pod(kubectl, model), "-n", model.namespace, RELABELLED, "--overwrite")
    return []


def _replace_tampered_pods(kubectl: Kubectl, model: Model) -> None:
    """The defender's answer to a tampered pod: delete it; its ReplicaSet makes a clean one."""
    tampered = [
        pod["metadata"]["name"]
        for pod in kubectl.items("pod", model.namespace)
        if pod["spec"].get("ephemeralContainers")
        or pod["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == "decoy"
        or any(container["image"] == OTHER_DIGEST for container in pod["spec"]["containers"])
    ]
    if tampered:
        kubectl("delete", "pod", *tampered, "-n", model.namespace, "--wait=false")


ATTACKS: dict[str, Attack] = {
    # The Deployment's pod template.
    "sidecar-removed-then-paused": Attack(
        "template",
        "mtls",
        "containers[mtls-proxy] (removed)",
        _remove_sidecar_and_pause,
        _sidecar_back_and_unpaused,
    ),
    "init-container-reads-the-tls-key": Attack(
        "template",
        "pod-security",
        "initContainers",
        _template_patch(INIT_GRAB_KEY),
        _template_lacks("initContainers"),
    ),
    "env-from-the-tls-secret": Attack(
        "template",
        "pod-security",
        "envFrom",
        _template_patch({"containers": [{"name": "model", "envFrom": [{"secretRef": {"name": "m-tls"}}]}]}),
        _model_container_lacks("envFrom"),
    ),
    "shared-process-namespace": Attack(
        "template",
        "pod-security",
        "shareProcessNamespace",
        _template_patch({"shareProcessNamespace": True}),
        _template_lacks("shareProcessNamespace"),
    ),
    "host-aliases-redirect-the-registry": Attack(
        "template",
        "pod-security",
        "hostAliases",
        _template_patch({"hostAliases": [{"ip": "203.0.113.7", "hostnames": ["registry.example.com"]}]}),
        _template_lacks("hostAliases"),
    ),
    "scratch-volume-on-the-nodes-disk": Attack(
        "template", "storage-encryption", "volumes[cache]", _disk_volume, _no_disk_volume
    ),
    "pinned-to-a-node-elsewhere": Attack(
        "template",
        "data-residency",
        "nodeSelector",
        _template_patch({"nodeSelector": {"topology.kubernetes.io/region": "us-east-1"}}),
        _template_lacks("nodeSelector"),
    ),
    "scaled-up-behind-the-operators-back": Attack(
        "template", "pod-security", "spec.replicas", _scale, _one_replica
    ),
    "image-swapped-for-another-digest": Attack(
        "template", "image-digest", "containers[model].image", _swap_image, _image_back
    ),
    # The NetworkPolicy and the Service.
    "policy-selects-nothing": Attack(
        "network",
        "network-isolation",
        "spec.podSelector",
        _policy_patch({"spec": {"podSelector": {"matchLabels": {"nothing": "selected"}}}}),
        _selects_model_again,
    ),
    "policy-port-range-added": Attack(
        "network",
        "network-isolation",
        "spec.egress",
        _policy_patch([{"op": "add", "path": "/spec/egress/0/ports/0/endPort", "value": 65535}], "json"),
        _no_end_port,
    ),
    "policy-stops-isolating-egress": Attack(
        "network",
        "network-isolation",
        "spec.policyTypes",
        _policy_patch({"spec": {"policyTypes": ["Ingress"]}}),
        _both_directions,
    ),
    "policy-admits-everyone": Attack(
        "network",
        "network-isolation",
        "spec.ingress",
        _policy_patch({"spec": {"ingress": [{}]}}),
        _no_ingress_rule,
    ),
    "service-external-ips": Attack(
        "network",
        "network-isolation",
        "spec.externalIPs",
        _service_patch({"spec": {"externalIPs": ["203.0.113.10"]}}),
        lambda source, model: not _service(source, model).get("externalIPs"),
    ),
    "service-made-node-port": Attack(
        "network",
        "network-isolation",
        "spec.type",
        _service_patch({"spec": {"type": "NodePort"}}),
        lambda source, model: _service(source, model).get("type") == "ClusterIP",
    ),
    "service-selects-another-pod": Attack(
        "network",
        "network-isolation",
        "spec.selector",
        _service_patch([{"op": "replace", "path": "/spec/selector", "value": {"app": "impostor"}}], "json"),
        lambda source, model: _service(source, model).get("selector", {}).get("app") != "impostor",
    ),
    # TLS material and access objects.
    "sidecar-stops-verifying-clients": Attack(
        "owned", "mtls", "data.nginx.conf", _edit_nginx_conf, _nginx_conf_verifies
    ),
    "trust-bundle-swapped-for-an-attacker-ca": Attack(
        "owned", "mtls", "data.ca.crt", _swap_trust_bundle, _trust_bundle_back
    ),
    "account-mounts-its-token": Attack(
        "owned", "rbac", "automountServiceAccountToken", _mount_token, _token_off
    ),
    "viewer-role-reads-secrets": Attack("owned", "rbac", "rules", _widen_viewer_role, _viewer_role_narrow),
    "deployer-binding-gains-a-subject": Attack(
        "owned", "rbac", "subjects", _add_deployer, _deployers_as_declared
    ),
    # Hiding an owned object from the operator, then changing it.
    "tls-secret-unlabelled-then-trust-swapped": Attack(
        "hidden", "mtls", "data.ca.crt", _unlabel_tls_secret_then_swap_trust, _trust_bundle_back_and_labelled
    ),
    "deployment-unlabelled-then-sidecar-removed": Attack(
        "hidden", "mtls", "mtls-proxy", _unlabel_deployment_then_drop_sidecar, _sidecar_back
    ),
    "sidecar-config-made-immutable": Attack(
        "hidden", "mtls", "immutable", _freeze_sidecar_config, _sidecar_config_mutable
    ),
    # Grants to the model's account, however they are written.
    "cluster-admin-to-the-accounts-user-name": Attack(
        "grant", "rbac", "do anything cluster-wide", _cluster_admin_to_account_user_name
    ),
    "cluster-admin-to-the-namespace-group-labelled-as-a-default": Attack(
        "grant", "rbac", "do anything", _cluster_admin_to_namespace_group_as_a_default
    ),
    "aggregated-cluster-role-gains-secrets": Attack("grant", "rbac", "get secrets", _aggregated_cluster_role),
    "role-to-watch-secrets": Attack(
        "grant",
        "rbac",
        "secrets",
        _role_for_account([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["watch"]}]),
    ),
    "role-to-create-jobs": Attack(
        "grant",
        "rbac",
        "jobs",
        _role_for_account([{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]),
    ),
    "secrets-of-another-namespace": Attack("grant", "rbac", "secrets", _secrets_of_another_namespace),
    # Foreign policies and Services that reach the model.
    "allow-all-selecting-the-pod-template-hash": Attack(
        "reach", "network-isolation", "allow-by-hash", _allow_all_by_template_hash
    ),
    "node-port-service-to-the-plain-http-port": Attack(
        "reach", "network-isolation", "expose", _node_port_to_the_plain_port
    ),
    # Pods that are not the model's but act like it.
    "stray-pod-with-the-models-labels": Attack(
        "impostor", "pod-security", "stray", _pod("stray", model_labels=True)
    ),
    "stray-replica-set-with-the-models-labels": Attack(
        "impostor", "pod-security", "m-stray", _stray_replica_set
    ),
    "pod-running-as-the-models-account": Attack(
        "impostor", "pod-security", "borrower", _pod("borrower", model_account=True)
    ),
    "pod-mounting-the-tls-secret": Attack(
        "impostor", "pod-security", "thief-volume", _pod("thief-volume", tls="volume")
    ),
    "pod-mounting-the-tls-secret-through-a-projected-volume": Attack(
        "impostor", "pod-security", "thief-projected", _pod("thief-projected", tls="projected")
    ),
    "pod-reading-the-tls-key-into-its-environment": Attack(
        "impostor", "pod-security", "thief-env", _pod("thief-env", tls="env")
    ),
    # Tampering with the running pod itself.
    "debug-container-attached": Attack(
        "pod", "pod-security", "ephemeral", _debug_container, after=_replace_tampered_pods
    ),
    "running-pods-image-swapped": Attack(
        "pod", "image-digest", "spec.containers[model].image", _swap_pod_image, after=_replace_tampered_pods
    ),
    "pod-relabelled-out-of-its-replica-set": Attack(
        "pod", "network-isolation", "does not select", _relabel_pod, after=_replace_tampered_pods
    ),
}


def _ids(group: str) -> list[str]:
    return [key for key, attack in ATTACKS.items() if attack.group == group]


# -------------------------------------------------------------------------------------------- campaign


def _metrics(operator: RunningOperator) -> dict[tuple[str, str, str], float]:
    _, text = operator.http("/metrics")
    return {
        (sample.labels["namespace"], sample.labels["name"], sample.labels["control"]): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "securemodels_compliance_status"
    }


def _fail_events(kubectl: Kubectl) -> list[dict[str, Any]]:
    found = kubectl.get("event", None, None, "-A", "--field-selector=reason=ControlFail")
    return list((found or {}).get("items") or [])


def _delete(kubectl: Kubectl, refs: list[Ref]) -> None:
    for kind, name, namespace in refs:
        where = ["-n", namespace] if namespace else []
        kubectl.run("delete", kind, name, *where, "--ignore-not-found", "--wait=false")


class Campaign:
    """Strikes every attack, then watches them all until each is detected, put right and passing.

    Three watchers run side by side: a quick one reads the verdicts often enough not to miss a Fail that
    stands for one resync; one reads the metric ten times a second from the strike on, on its own, as the
    metric goes back to 1 just before the status goes back to Pass; a slow one reads Events and the
    operator's objects, and removes what the attacker left once the problem is reported.
    """

    def __init__(self, kubectl: Kubectl, operator: RunningOperator, models: dict[str, Model]) -> None:
        self.kubectl, self.operator, self.models = kubectl, operator, models
        self.seen = {key: Seen() for key in ATTACKS}
        self.struck: dict[str, float] = {}
        self.striking: set[str] = set()
        self.refs: dict[str, list[Ref]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _elapsed(self, key: str, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.struck[key]

    def _strike(self, key: str) -> None:
        attack, seen = ATTACKS[key], self.seen[key]
        refs: list[Ref] = []
        self.striking.add(key)
        try:
            refs = attack.strike(self.kubectl, self.models[key])
        except Exception as error:  # noqa: BLE001 - reported by the attack's own test
            seen.error = f"{type(error).__name__}: {getattr(error, 'stderr', '') or error}"
        self.struck[key] = time.monotonic()
        for ref in refs:
            seen.foreign[ref] = fingerprint(self.kubectl.get(ref[0], ref[1], ref[2]))
        self.refs[key] = refs

    def _pending(self) -> list[str]:
        return [
            key
            for key in ATTACKS
            if key in self.refs and self.seen[key].error is None and self.seen[key].passed_after is None
        ]

    def ready(self, timeout: float) -> None:
        """Wait for every model to be Ready and compliant; an attack on one that never is cannot be
        judged, and says so."""
        try:
            wait_compliant(self.kubectl, list(self.models.values()), timeout=timeout)
        except AssertionError:
            found = all_smds(self.kubectl)
            for key, model in self.models.items():
                smd_object = found.get((model.namespace, model.name))
                if not fully_compliant(smd_object):
                    status = (smd_object or {}).get("status") or {}
                    ready = self.kubectl.condition(smd_object, "Ready") or {}
                    self.seen[key].error = (
                        f"the model was never Ready and compliant before the attack: {status.get('phase')} "
                        f"({ready.get('reason')}: {ready.get('message')}), while its Deployment is "
                        f"{(self.kubectl.get('deployment', model.name, model.namespace) or {}).get('status')}"
                    )

    def _hopeful(self) -> list[str]:
        """Pending attacks still worth waiting for: reported, or not yet given up on."""
        return [
            key
            for key in self._pending()
            if self.seen[key].verdict is not None or self._elapsed(key) < GIVE_UP_SECONDS
        ]

    def run(self, seconds: float) -> None:
        watchers = [
            threading.Thread(target=self._slow_watch, name="campaign-slow", daemon=True),
            threading.Thread(target=self._metric_watch, name="campaign-metric", daemon=True),
        ]
        for watcher in watchers:
            watcher.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            strikes = [pool.submit(self._strike, key) for key in ATTACKS if self.seen[key].error is None]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and (
                not all(item.done() for item in strikes) or self._hopeful()
            ):
                self._quick_round()
                time.sleep(0.3)
        self.stop.set()
        for watcher in watchers:
            watcher.join(timeout=30)
        self._last_events()

    def _event_for(self, key: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        model, attack = self.models[key], ATTACKS[key]
        return next(
            (
                item
                for item in events
                if item["involvedObject"].get("namespace") == model.namespace
                and item["involvedObject"].get("name") == model.name
                and item["type"] == "Warning"
                and item["message"].startswith(f"{attack.control}:")
            ),
            None,
        )

    def _last_events(self) -> None:
        """Events are kept: one more look for those of attacks that were put right before it was seen."""
        missing = [key for key, seen in self.seen.items() if seen.verdict is not None and seen.event is None]
        if missing:
            events = _fail_events(self.kubectl)
            for key in missing:
                self.seen[key].event = self._event_for(key, events)

    def _quick_round(self) -> None:
        began = time.monotonic()
        smds = all_smds(self.kubectl)
        metrics = _metrics(self.operator)
        for key in self._pending():
            attack, model, seen = ATTACKS[key], self.models[key], self.seen[key]
            found = smds.get((model.namespace, model.name))
            state = self.kubectl.control(found, attack.control) or {}
            metric = metrics.get((model.namespace, model.name, attack.control))
            ready = self.kubectl.condition(found, "Ready") or {}
            with self.lock:
                seen.last_ready = (
                    f"{((found or {}).get('status') or {}).get('phase')} ({ready.get('reason')})"
                )
                message = state.get("message")
                if state.get("status") != "Pass" and message and message not in seen.messages:
                    seen.messages.append(message)
                if seen.verdict is None:
                    if state.get("status") != "Fail" or attack.names not in (message or ""):
                        seen.not_detected_at = self._elapsed(key, began)
                        continue
                    seen.verdict, seen.detected_after = state, self._elapsed(key)
                put_right = seen.undone_after is not None if attack.undone else seen.cleaned
                if put_right and state.get("status") == "Pass" and metric == 1.0:
                    seen.passed_after = self._elapsed(key)

    def _metric_watch(self) -> None:
        while not self.stop.is_set():
            try:
                metrics = _metrics(self.operator)
            except OSError as error:
                log.warning("campaign: reading the metrics failed (%s); trying again", error)
                metrics = {}
            for key in list(self.striking):
                model = self.models[key]
                if metrics.get((model.namespace, model.name, ATTACKS[key].control)) == 0.0:
                    # The metric names the control, not the finding: any 0 after the strike counts.
                    with self.lock:
                        self.seen[key].metric_zero = True
            self.stop.wait(0.1)

    def _slow_watch(self) -> None:
        while not self.stop.is_set():
            try:
                self._slow_round()
            except Exception as error:  # noqa: BLE001 - a failed read is tried again next round
                log.warning("campaign: reading the cluster failed (%s); trying again", error)
            self.stop.wait(1.0)

    def _slow_round(self) -> None:
        detected = [key for key in self._pending() if self.seen[key].verdict is not None]
        if not detected:
            return
        began = time.monotonic()
        events = _fail_events(self.kubectl)
        live = Live.read(self.kubectl)
        for key in detected:
            attack, model, seen = ATTACKS[key], self.models[key], self.seen[key]
            event = self._event_for(key, events)
            with self.lock:
                seen.event = seen.event or event
                if attack.undone is not None:
                    if seen.undone_after is None:
                        if attack.undone(live, model):
                            seen.undone_after = self._elapsed(key)
                        else:
                            seen.not_undone_at = self._elapsed(key, began)
                    continue
                if seen.cleaned:
                    continue
                waited = self._elapsed(key) - (seen.detected_after or 0.0)
                if not seen.metric_zero and waited < RESYNC_SECONDS:
                    continue  # give the metric watcher its chance to see the 0 first
            self._clean(key, attack, model, seen)

    def _clean(self, key: str, attack: Attack, model: Model, seen: Seen) -> None:
        for ref, before in seen.foreign.items():
            now = fingerprint(self.kubectl.get(ref[0], ref[1], ref[2]))
            if now != before:
                seen.foreign_changed.append(f"{ref[0]} {ref[2] or ''}/{ref[1]}: {before} became {now}")
        _delete(self.kubectl, self.refs[key])
        if attack.after is not None:
            attack.after(self.kubectl, model)
        with self.lock:
            seen.cleaned = True

    def clean_up(self) -> None:
        """What deleting the models' namespaces does not remove: cluster-wide objects, other namespaces."""
        for key in ATTACKS:
            if not self.seen[key].cleaned:
                _delete(self.kubectl, [ref for ref in self.refs.get(key, []) if ref[2] is None])


@pytest.fixture(scope="module")
def campaign(kubectl: Kubectl, operator: RunningOperator) -> Iterator[dict[str, Seen]]:
    keys = list(ATTACKS)
    models = dict(zip(keys, launch(kubectl, "fc", [SPEC for _ in keys]), strict=True))
    running = Campaign(kubectl, operator, models)
    try:
        running.ready(timeout=90)
        running.run(WATCH_SECONDS)
        yield running.seen
    finally:
        running.clean_up()
        delete_namespaces(kubectl, [model.namespace for model in models.values()])


# ------------------------------------------------------------------------------------------ verdicts


def _assert_detected(key: str, seen: Seen) -> None:
    attack = ATTACKS[key]
    assert seen.error is None, f"the attack itself failed: {seen.error}"
    assert seen.verdict is not None, (
        f"{attack.control} never reported Fail naming {attack.names!r} within {GIVE_UP_SECONDS}s; "
        f"messages seen: {seen.messages or 'none (it stayed Pass)'}; the SMD was {seen.last_ready}"
    )
    assert seen.not_detected_at <= WITHIN_A_RESYNC + SLACK, (
        f"still not reported {seen.not_detected_at:.1f}s after the attack"
    )
    assert seen.metric_zero, f"securemodels_compliance_status{{control={attack.control!r}}} never showed 0"
    assert seen.event is not None, f"no Warning ControlFail Event for {attack.control}"


def _assert_undone(key: str, seen: Seen) -> None:
    _assert_detected(key, seen)
    assert seen.undone_after is not None, (
        f"the attacker's change to the operator's object was never undone; messages seen: {seen.messages}"
    )
    # The repair is written in the pass that reports the Fail.
    late = seen.not_undone_at or 0.0
    assert late <= (seen.detected_after or 0.0) + SLACK, f"still not undone {late:.1f}s after the attack"
    assert seen.passed_after is not None, "the control never passed again after the repair"
    assert seen.passed_after - seen.not_detected_at >= RESYNC_SECONDS / 2, (
        "the Fail did not stand until the next resync"
    )


def _assert_left_alone(key: str, seen: Seen) -> None:
    _assert_detected(key, seen)
    assert not seen.foreign_changed, (
        f"the operator touched objects that are not its own: {seen.foreign_changed}"
    )
    assert seen.passed_after is not None, (
        "the control never passed again once the attacker's objects were gone"
    )


@pytest.mark.parametrize("key", _ids("template"))
def test_a_tampered_pod_template_is_reported_and_restored(campaign: dict[str, Seen], key: str) -> None:
    _assert_undone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("network"))
def test_a_tampered_network_policy_or_service_is_reported_and_restored(
    campaign: dict[str, Seen], key: str
) -> None:
    _assert_undone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("owned"))
def test_tampered_tls_material_or_access_objects_are_reported_and_restored(
    campaign: dict[str, Seen], key: str
) -> None:
    _assert_undone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("hidden"))
def test_an_owned_object_hidden_from_the_operator_is_still_reported_and_restored(
    campaign: dict[str, Seen], key: str
) -> None:
    _assert_undone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("grant"))
def test_a_grant_to_the_model_account_is_reported_however_it_is_written(
    campaign: dict[str, Seen], key: str
) -> None:
    _assert_left_alone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("reach"))
def test_a_foreign_policy_or_service_reaching_the_model_is_reported_and_left_alone(
    campaign: dict[str, Seen], key: str
) -> None:
    _assert_left_alone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("impostor"))
def test_a_pod_acting_as_the_model_is_reported_and_left_alone(campaign: dict[str, Seen], key: str) -> None:
    _assert_left_alone(key, campaign[key])


@pytest.mark.parametrize("key", _ids("pod"))
def test_a_tampered_model_pod_is_reported_until_it_is_replaced(campaign: dict[str, Seen], key: str) -> None:
    _assert_left_alone(key, campaign[key])


# ----------------------------------------------------------------------------------- CIDR arithmetic


def _slash_eights(first: int, last: int) -> list[dict[str, Any]]:
    """Egress rules to every /8 from first to last: each peer alone is narrow enough for the CRD."""
    peers = [{"cidr": f"{octet}.0.0.0/8"} for octet in range(first, last + 1)]
    return [{"to": peers[start : start + 32], "ports": [{"port": 443}]} for start in range(0, len(peers), 32)]


def test_cidrs_that_together_cover_most_of_ipv4_block_the_smd_unless_opted_in(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    egress = _slash_eights(1, 223)  # everything routable but 0/8 and multicast
    kubectl.apply(smd("sprawl", namespace, network={"egress": egress}))

    blocked = wait_blocked(kubectl, Model("sprawl", namespace))

    assert blocked["reason"] == "NetworkTooBroad", blocked
    assert "spec.network.allowEgressToAnywhere" in blocked["message"]
    assert kubectl.get("networkpolicy", "sprawl-network", namespace) is None
    assert kubectl.get("deployment", "sprawl", namespace) is None
    # The same peers with the opt-in: allowed, and reported as weakened rather than passing.
    kubectl.apply(smd("sprawl", namespace, network={"egress": egress, "allowEgressToAnywhere": True}))

    def weakened() -> dict[str, Any] | None:
        found = kubectl.control(kubectl.get("smd", "sprawl", namespace), "network-isolation")
        return found if found and found["status"] == "Weakened" else None

    verdict = wait_for(weakened, timeout=60, what="network-isolation Weakened")
    assert "EgressToAnywhere" in verdict["reason"]

"""What the chart renders, checked without a cluster: RBAC, hardening, labels, config, schema, scanners."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm import IMAGE_VALUES, RELEASE, helm, one, render, with_image
from securemodels.api import v1alpha1
from securemodels.api.v1alpha1 import DIGEST_IMAGE_PATTERN
from securemodels.config import DEFAULT_SIDECAR_IMAGE, OperatorConfig, PolicyReports
from securemodels.handlers import permissions
from support.paths import CHART, CRD, OPERATOR_NAMESPACE, ROOT

NAMESPACED_VALUES: dict[str, Any] = {"config": {"watchNamespaces": ["ml-prod", "ml-gateway"]}}
FULLNAME = f"{RELEASE}-secure-model-operator"
SERVICE_ACCOUNT = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": OPERATOR_NAMESPACE}
# The operator posts Events about its CA Secret in its own namespace (handlers/ca.py), a permission
# permissions.OWN_NAMESPACE does not list; the chart grants it there.
CA_EVENTS = ("", "events", "create", ())
MIRRORED_SIDECAR = "registry.example.com/mirror/nginx-unprivileged@sha256:" + "0f" * 32
ADMISSION_ROLE_SUFFIXES = ("-security-admin", "-client-certificates")
CLUSTER_SCOPED = (
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
ADMISSION_POLICIES = ("mounts", "configmaps", "clients", "access")
# Everything the chart can add for monitoring: the ServiceMonitor, the alerts and the dashboard.
MONITORING = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}

Grant = tuple[str, str, str, tuple[str, ...]]
# What the operator holds in each managed namespace, with the compliance reports on (the default).
NAMESPACED_PERMISSIONS = permissions.NAMESPACED + permissions.compliance_reports(PolicyReports())


def grants(items: Iterable[permissions.Permission]) -> set[Grant]:
    return {(item.group, item.resource, verb, tuple(item.names)) for item in items for verb in item.verbs}


def rule_grants(role: dict[str, Any]) -> set[Grant]:
    return {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def rbac(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's own RBAC: not the roles the admission policy refers to, which it never holds."""
    return [
        item
        for item in objects
        if item["apiVersion"].startswith("rbac.authorization.k8s.io/")
        and not item["metadata"]["name"].endswith(ADMISSION_ROLE_SUFFIXES)
    ]


def test_the_chart_crds_are_identical_to_the_generated_ones() -> None:
    generated = {path.name: path.read_bytes() for path in CRD.parent.glob("*.yaml")}
    shipped = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*.yaml")}

    assert shipped.keys() == generated.keys(), "run `make crds`"
    for name, content in generated.items():
        assert shipped[name] == content, f"charts/secure-model-operator/crds/{name} is stale: run `make crds`"


def test_the_crd_comes_only_from_crds_so_helm_never_upgrades_or_deletes_it() -> None:
    """Helm applies crds/ at first install only and never deletes it; a templated CRD would be deleted
    by `helm uninstall`, and every SMD with it."""
    templated = render()
    with_crds = render({}, OPERATOR_NAMESPACE, "--include-crds")

    assert not [item for item in templated if item["kind"] == "CustomResourceDefinition"]
    (crd,) = [item for item in with_crds if item["kind"] == "CustomResourceDefinition"]
    assert crd == yaml.safe_load(CRD.read_text())


LEASE_GRANTS = grants(permissions.leader_election("secure-model-operator"))


def leader_election_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [
        item
        for item in objects
        if item["metadata"]["name"].endswith("-leader-election") and item["kind"] == "Role"
    ]
    return role


def test_cluster_wide_rbac_is_exactly_the_operators_permissions() -> None:
    objects = rbac(render())

    assert sorted(item["kind"] for item in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ]
    assert rule_grants(leader_election_role(objects)) == LEASE_GRANTS
    assert leader_election_role(objects)["metadata"]["namespace"] == OPERATOR_NAMESPACE
    role = one(objects, "ClusterRole")
    assert rule_grants(role) == grants(NAMESPACED_PERMISSIONS) | grants(permissions.CLUSTER)
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [SERVICE_ACCOUNT]


def test_namespaced_rbac_grants_each_watched_namespace_and_the_cluster_kinds_only() -> None:
    objects = rbac(render(NAMESPACED_VALUES))

    assert rule_grants(leader_election_role(objects)) == LEASE_GRANTS
    objects = [item for item in objects if not item["metadata"]["name"].endswith("-leader-election")]
    roles = {
        (item["kind"], item["metadata"].get("namespace")): item
        for item in objects
        if "Role" in item["kind"] and "Binding" not in item["kind"]
    }
    assert set(roles) == {
        ("ClusterRole", None),
        ("Role", "ml-prod"),
        ("Role", "ml-gateway"),
        ("Role", OPERATOR_NAMESPACE),
    }
    assert rule_grants(roles["ClusterRole", None]) == grants(permissions.CLUSTER)
    assert rule_grants(roles["Role", "ml-prod"]) == grants(NAMESPACED_PERMISSIONS)
    assert rule_grants(roles["Role", "ml-gateway"]) == grants(NAMESPACED_PERMISSIONS)
    assert rule_grants(roles["Role", OPERATOR_NAMESPACE]) == grants(permissions.OWN_NAMESPACE) | {CA_EVENTS}
    bindings = [item for item in objects if item["kind"].endswith("Binding")]
    assert len(bindings) == len(roles)
    for binding in bindings:
        role = roles[binding["roleRef"]["kind"], binding["metadata"].get("namespace")]
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [SERVICE_ACCOUNT]


@pytest.mark.parametrize("values", [{}, NAMESPACED_VALUES], ids=["cluster-wide", "namespaced"])
def test_no_rbac_rule_uses_a_wildcard_or_a_privilege_escalation_verb(values: dict[str, Any]) -> None:
    for role in rbac(render(values)):
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert all("*" not in entry for entry in rule[field]), (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_the_config_file_is_a_valid_operator_config_carrying_the_values() -> None:
    objects = render(
        {
            "config": {
                "watchNamespaces": ["ml-prod"],
                "resyncSeconds": 12.5,
                "allowedRegistries": ["registry.example.com"],
                "sidecarImage": MIRRORED_SIDECAR,
            }
        }
    )

    config_map = one(objects, "ConfigMap")
    config = OperatorConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert config.namespace == OPERATOR_NAMESPACE
    assert config.watch_namespaces == ("ml-prod",)
    assert config.resync_seconds == 12.5
    assert config.allowed_registries == ("registry.example.com",)
    assert config.sidecar_image == MIRRORED_SIDECAR
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:5] == [
        "run",
        "--config",
        "/etc/securemodels/config.yaml",
        "--http-port",
        "8080",
    ]
    mount = next(item for item in container["volumeMounts"] if item["mountPath"] == "/etc/securemodels")
    volume = next(item for item in pod["volumes"] if item["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in container["env"]


def test_the_values_schema_knows_every_operator_config_key() -> None:
    """Any OperatorConfig setting can be given through values; nothing else is accepted under `config`."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    keys = set(schema["properties"]["config"]["properties"])
    aliases = {field.alias for field in OperatorConfig.model_fields.values()}
    assert keys == aliases - {"namespace"}


def test_the_sidecar_default_and_the_image_rules_are_the_operators() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    assert values["config"]["sidecarImage"] == DEFAULT_SIDECAR_IMAGE
    assert schema["properties"]["config"]["properties"]["sidecarImage"]["pattern"] == DIGEST_IMAGE_PATTERN


def test_a_sidecar_outside_the_registry_allow_list_is_refused_before_the_operator_would_crash() -> None:
    refused = helm(
        "template", RELEASE, str(CHART), values=with_image({"config": {"allowedRegistries": ["ghcr.io"]}})
    )

    assert refused.returncode != 0
    assert "config.sidecarImage docker.io/nginxinc/nginx-unprivileged" in refused.stderr
    assert "is not from a registry in config.allowedRegistries (ghcr.io)" in refused.stderr
    with pytest.raises(ValueError, match="not from a registry in allowedRegistries"):
        OperatorConfig(allowed_registries=("ghcr.io",))


def test_one_replica_leads_the_others_stand_by_spread_and_drained_one_at_a_time() -> None:
    objects = render()

    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


def test_without_leader_election_exactly_one_replica_replaced_with_recreate() -> None:
    objects = render({"replicas": 3, "config": {"leaderElection": {"enabled": False}}})

    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [item for item in objects if item["kind"] == "PodDisruptionBudget"]
    assert not [item for item in objects if item["metadata"]["name"].endswith("-leader-election")]


def test_the_operator_runs_hardened_by_digest_with_probes_on_http() -> None:
    objects = render()

    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is True
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    image = IMAGE_VALUES["image"]
    assert container["image"] == f"{image['repository']}@{image['digest']}"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert all(set(container["resources"][kind]) == {"cpu", "memory"} for kind in ("requests", "limits"))


def test_a_config_change_changes_the_pod_template_and_nothing_else_does() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    baseline = checksum({})
    assert checksum({}) == baseline
    assert checksum({"logLevel": "debug"}) == baseline
    assert checksum({"config": {"resyncSeconds": 45}}) != baseline
    assert checksum({"config": {"allowedRegistries": ["docker.io"]}}) != baseline


@pytest.mark.parametrize("values", [{}, NAMESPACED_VALUES], ids=["cluster-wide", "namespaced"])
def test_every_object_carries_the_chart_labels(values: dict[str, Any]) -> None:
    objects = render({**values, "metrics": MONITORING})

    for item in objects:
        labels = item["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "secure-model-operator"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/component"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "secure-model-operator"
        assert labels["helm.sh/chart"] == "secure-model-operator-0.1.0"
        if item["kind"] not in CLUSTER_SCOPED:
            assert item["metadata"]["namespace"], item["metadata"]["name"]
    selector = {"app.kubernetes.io/name": "secure-model-operator", "app.kubernetes.io/instance": RELEASE}
    assert one(objects, "Deployment")["spec"]["selector"] == {"matchLabels": selector}
    assert one(objects, "Service")["spec"]["selector"] == selector
    assert one(objects, "NetworkPolicy")["spec"]["podSelector"] == {"matchLabels": selector}


def test_the_service_monitor_is_off_by_default_and_scrapes_the_metrics_service() -> None:
    assert not [item for item in render() if item["kind"] == "ServiceMonitor"]

    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}})

    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == [
        port["name"] for port in service["spec"]["ports"]
    ]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_network_policy_admits_only_scrapes_and_reaches_only_the_api_server_and_dns() -> None:
    objects = render(
        {
            "config": {"monitoringNamespace": "prometheus"},
            "networkPolicy": {"apiServerCIDRs": ["10.0.0.1/32"], "apiServerPorts": [6443]},
        }
    )

    spec = one(objects, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}}],
            "ports": [{"port": "http", "protocol": "TCP"}],
        }
    ]
    api_server, dns = spec["egress"]
    assert api_server == {
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
        "ports": [{"port": 6443, "protocol": "TCP"}],
    }
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert {port["port"] for port in dns["ports"]} == {53}


def test_without_api_server_addresses_the_operator_may_only_reach_the_api_server_ports() -> None:
    api_server = one(render(), "NetworkPolicy")["spec"]["egress"][0]

    assert "to" not in api_server
    assert api_server["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    assert not [
        item for item in render({"networkPolicy": {"enabled": False}}) if item["kind"] == "NetworkPolicy"
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"image": {"digest": "sha256:abc"}},
            "at '/image/digest': 'sha256:abc' does not match pattern '^sha256:[a-f0-9]{64}$'",
        ),
        ({"image": {"repository": "registry.example.com/op:1.0"}}, "at '/image/repository'"),
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"config": {"resyncSeconds": 0}}, "at '/config/resyncSeconds': exclusiveMinimum"),
        ({"config": {"watchNamespaces": ["ML_Prod"]}}, "at '/config/watchNamespaces/0'"),
        ({"config": {"resyncSecond": 10}}, "additional properties 'resyncSecond' not allowed"),
        ({"resources": {"limits": None}}, "missing property 'limits'"),
        ({"networkPolicy": {"apiServerCIDRs": ["10.0.0.1"]}}, "at '/networkPolicy/apiServerCIDRs/0'"),
    ],
    ids=["digest", "tag", "replicas", "resync", "namespace", "typo", "limits", "cidr"],
)
def test_the_schema_refuses_bad_values_with_its_message(values: dict[str, Any], message: str) -> None:
    result = helm("template", RELEASE, str(CHART), values=with_image(values))

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("field", ["repository", "digest"])
def test_the_image_must_be_given(field: str) -> None:
    values = with_image()
    del values["image"][field]

    result = helm("template", RELEASE, str(CHART), values=values)

    assert result.returncode != 0
    assert f"image.{field} is required" in result.stderr


def test_clusters_older_than_1_30_are_refused() -> None:
    refused = helm("template", RELEASE, str(CHART), "--kube-version=1.29.9", values=with_image())
    accepted = helm("template", RELEASE, str(CHART), "--kube-version=1.30.0", values=with_image())

    assert refused.returncode != 0
    assert "kubeVersion" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def test_helm_lint_strict_is_clean() -> None:
    bare = helm("lint", "--strict", str(CHART))
    configured = helm("lint", "--strict", str(CHART), values=with_image(NAMESPACED_VALUES))

    for result in (bare, configured):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[WARNING]" not in result.stdout
        assert "[ERROR]" not in result.stdout
    assert configured.stderr == ""


CHECKOV_CONFIG = CHART / ".checkov.yaml"
# "# CKV_K8S_38: <reason>" on a line of its own.
SKIP_REASON = re.compile(r"^\s*#\s*(CKV2?_[A-Z0-9_]+):\s*\S", re.MULTILINE)


def checkov() -> Path:
    """checkov pins libraries that clash with the project's, so it lives in the judges' venv."""
    tool = Path(os.environ.get("JUDGES_BIN") or ROOT / ".venv-judges" / "bin") / "checkov"
    if not tool.is_file():
        pytest.fail(f"{tool} is missing: run `make .venv-judges/.installed` or set JUDGES_BIN")
    return tool


def test_checkov_fails_exactly_the_reasoned_skips_and_nothing_else(tmp_path: Path) -> None:
    """Run without the skip list: what fails must be the skips, so none hides a new finding or outlives
    its need. Both RBAC shapes are scanned, each in its own run, since graph checks join all files."""
    settings = yaml.safe_load(CHECKOV_CONFIG.read_text())
    skips = set(settings["skip-check"])
    unskipped = tmp_path / "checkov.yaml"
    unskipped.write_text(yaml.safe_dump({**settings, "skip-check": []}))
    for name, values in {
        "cluster-wide": {},
        "namespaced": {**NAMESPACED_VALUES, "metrics": MONITORING},
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "chart.yaml").write_text(yaml.safe_dump_all(render(values)))

        result = subprocess.run(
            [
                str(checkov()),
                "--directory",
                str(tmp_path / name),
                "--config-file",
                str(unskipped),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )

        report = json.loads(result.stdout)
        assert report["summary"]["passed"] > 0, name
        failed = {(check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]}
        assert {check_id for check_id, _ in failed} == skips, (name, sorted(failed))


def test_every_checkov_skip_says_why() -> None:
    settings = yaml.safe_load(CHECKOV_CONFIG.read_text())

    reasoned = set(SKIP_REASON.findall(CHECKOV_CONFIG.read_text()))
    assert set(settings["skip-check"]) <= reasoned


# ------------------------------------------------------------------------------------ admission policy


def policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The admission policies by their last name part (mounts, configmaps, clients, access)."""
    return {
        item["metadata"]["name"].rsplit("-", 1)[1]: item
        for item in objects
        if item["kind"] == "ValidatingAdmissionPolicy"
    }


def test_the_admission_policies_are_on_by_default_each_bound_to_deny() -> None:
    objects = render()

    found = policies(objects)
    assert sorted(found) == sorted(ADMISSION_POLICIES)
    bindings = {
        item["spec"]["policyName"]: item
        for item in objects
        if item["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    for policy in found.values():
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["spec"]["matchConstraints"]["resourceRules"] == [
            {
                "apiGroups": [v1alpha1.GROUP],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": [v1alpha1.PLURAL],
            }
        ]
        binding = bindings[policy["metadata"]["name"]]
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert "matchResources" not in binding["spec"]
    assert not [
        item for item in render({"admissionPolicy": {"enabled": False}}) if "AdmissionPolicy" in item["kind"]
    ]


def test_with_watch_namespaces_the_policies_bind_only_there() -> None:
    objects = render({"config": {"watchNamespaces": ["ml-prod", "ml-gateway"]}})

    for item in objects:
        if item["kind"] == "ValidatingAdmissionPolicyBinding":
            assert item["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml-prod", "ml-gateway"]}
            ]


@pytest.mark.parametrize(
    ("policy", "prefix", "limit"),
    [
        ("mounts", "secret", v1alpha1.MAX_SECRET_FILES),
        ("configmaps", "configMap", v1alpha1.MAX_CONFIG_MAP_ENV),
        ("clients", "client", v1alpha1.MAX_CLIENTS),
    ],
)
def test_each_item_the_api_allows_gets_its_own_authorizer_check(policy: str, prefix: str, limit: int) -> None:
    """The API server allows two authorizer checks per expression: a list longer than the policy's
    variables would pass its tail unchecked."""
    variables = [item["name"] for item in policies(render())[policy]["spec"]["variables"]]

    checked = [name for name in variables if re.fullmatch(rf"{prefix}[0-9]+", name)]
    assert checked == [f"{prefix}{index}" for index in range(limit)]
    for item in policies(render())[policy]["spec"]["variables"]:
        assert item["expression"].count("authorizer.") <= 1, item["name"]


def test_the_security_admin_holds_every_verb_the_policies_ask_for() -> None:
    objects = render()
    asked = set(
        re.findall(r"check\('([a-z-]+)'\)", json.dumps([item["spec"] for item in policies(objects).values()]))
    )
    admin = next(item for item in objects if item["metadata"]["name"].endswith("-security-admin"))

    (rule,) = admin["rules"]
    assert rule["apiGroups"] == [v1alpha1.GROUP]
    assert rule["resources"] == [v1alpha1.PLURAL]
    assert {"grant", "weaken", "quarantine", "set-owner"} <= set(rule["verbs"])
    assert {"grant", "weaken", "quarantine", "set-owner"} <= asked


def test_client_certificates_opt_in_is_aggregated_into_admin_and_edit_only() -> None:
    role = next(item for item in render() if item["metadata"]["name"].endswith("-client-certificates"))

    labels = role["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in labels
    assert role["rules"] == [
        {"apiGroups": [v1alpha1.GROUP], "resources": ["clientcertificates"], "verbs": ["create"]}
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {("wgpolicyk8s.io", "policyreports")}),
        ({"api": "openreports.io/v1alpha1"}, {("openreports.io", "reports")}),
        ({"enabled": False}, set()),
    ],
    ids=["policyreport", "openreports", "off"],
)
def test_the_operator_may_write_only_the_configured_report_kind(
    settings: dict[str, Any], expected: set[tuple[str, str]]
) -> None:
    role = one(rbac(render({"config": {"policyReports": settings}})), "ClusterRole")
    reports = {(group, resource) for group, resource, _, _ in rule_grants(role) if "reports" in resource}

    assert reports == expected
    configured = PolicyReports.model_validate({**settings})
    assert {(item.group, item.resource) for item in permissions.compliance_reports(configured)} == expected

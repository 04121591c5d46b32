"""The questions asked of the authorizer about the model's account: what each probe means and the
SubjectAccessReview that asks it."""

from __future__ import annotations

import re

import pytest

from securemodels.api import v1alpha1
from securemodels.desired import permissions
from securemodels.desired.permissions import Probe

DESCRIPTIONS: list[tuple[Probe, str]] = [
    (Probe("*", "*", "*", cluster_wide=True), "do anything cluster-wide"),
    (Probe("*", "*", "*"), "do anything"),
    (Probe("get", "", "secrets"), "get secrets"),
    (Probe("list", "", "secrets", cluster_wide=True), "list secrets cluster-wide"),
    (Probe("create", "", "pods", "exec"), "create pods/exec"),
    (Probe("create", "", "serviceaccounts", "token"), "create serviceaccounts/token"),
    (Probe("patch", "apps", "deployments"), "patch deployments.apps"),
    (Probe("patch", v1alpha1.GROUP, v1alpha1.PLURAL), "patch securemodeldeployments.securemodels.io"),
    (Probe("impersonate", "", "users", cluster_wide=True), "impersonate users cluster-wide"),
    (Probe("get", "*", "secrets"), "get secrets"),
    (Probe("*", "", "secrets"), "* secrets"),
]


@pytest.mark.parametrize(("probe", "text"), DESCRIPTIONS, ids=[text for _, text in DESCRIPTIONS])
def test_a_probe_reads_as_the_permission_it_asks_about(probe: Probe, text: str) -> None:
    assert probe.describe() == text


ATTRIBUTES: list[tuple[Probe, dict[str, str]]] = [
    (
        Probe("get", "", "secrets"),
        {"verb": "get", "group": "", "resource": "secrets", "namespace": "ml-prod"},
    ),
    (
        Probe("create", "", "pods", "exec"),
        {"verb": "create", "group": "", "resource": "pods", "subresource": "exec", "namespace": "ml-prod"},
    ),
    (Probe("list", "", "secrets", cluster_wide=True), {"verb": "list", "group": "", "resource": "secrets"}),
    (Probe("*", "*", "*", cluster_wide=True), {"verb": "*", "group": "*", "resource": "*"}),
]


@pytest.mark.parametrize(
    ("probe", "attributes"), ATTRIBUTES, ids=[probe.describe() for probe, _ in ATTRIBUTES]
)
def test_attributes_name_the_namespace_unless_cluster_wide(probe: Probe, attributes: dict[str, str]) -> None:
    assert probe.attributes("ml-prod") == attributes


def test_a_review_asks_as_the_account_with_its_groups() -> None:
    body = permissions.review("ml-prod", "fraud", Probe("create", "", "pods", "exec"))

    assert body == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "system:serviceaccount:ml-prod:fraud",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:ml-prod", "system:authenticated"],
            "resourceAttributes": {
                "verb": "create",
                "group": "",
                "resource": "pods",
                "subresource": "exec",
                "namespace": "ml-prod",
            },
        },
    }


def test_a_cluster_wide_review_names_no_namespace() -> None:
    body = permissions.review("ml-prod", "fraud", Probe("impersonate", "", "users", cluster_wide=True))

    assert "namespace" not in body["spec"]["resourceAttributes"]
    assert body["spec"]["user"] == "system:serviceaccount:ml-prod:fraud"


@pytest.mark.parametrize("probe", permissions.PROBES, ids=[probe.describe() for probe in permissions.PROBES])
def test_every_probe_asks_in_the_models_namespace_or_cluster_wide(probe: Probe) -> None:
    attributes = permissions.review("ml-prod", "fraud", probe)["spec"]["resourceAttributes"]

    assert attributes.get("namespace") == (None if probe.cluster_wide else "ml-prod")


def test_the_probes_ask_about_credentials_code_tokens_and_everything() -> None:
    described = [probe.describe() for probe in permissions.PROBES]

    assert len(set(described)) == len(described)
    assert {
        "do anything cluster-wide",
        "get secrets",
        "list secrets cluster-wide",
        "create pods/exec",
        "create serviceaccounts/token",
        "create rolebindings.rbac.authorization.k8s.io",
        "patch securemodeldeployments.securemodels.io",
        "impersonate users cluster-wide",
    } <= set(described)


def test_the_baseline_account_is_one_no_service_account_can_be() -> None:
    assert re.fullmatch(v1alpha1.DNS_LABEL_PATTERN, permissions.BASELINE_ACCOUNT) is None
    assert permissions.review("ml-prod", permissions.BASELINE_ACCOUNT, permissions.PROBES[0])["spec"][
        "groups"
    ] == (permissions.groups_of("ml-prod"))


def test_user_and_groups_of_an_account() -> None:
    assert permissions.user_of("ns", "sa") == "system:serviceaccount:ns:sa"
    assert permissions.groups_of("ns") == [
        "system:serviceaccounts",
        "system:serviceaccounts:ns",
        "system:authenticated",
    ]

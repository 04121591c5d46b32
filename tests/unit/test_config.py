"""The operator's settings: defaults, the YAML file (camelCase), overrides, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from securemodels.config import DEFAULT_SIDECAR_IMAGE, DNSPeer, EncryptionParameter, OperatorConfig
from securemodels.desired.controls import image_digest

SIDECAR = "registry.example.com/mirror/nginx-unprivileged@sha256:" + "0" * 64


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults() -> None:
    config = OperatorConfig()

    assert config.namespace == "secure-model-operator"
    assert config.watch_namespaces == ()
    assert config.resync_seconds == 30.0
    assert config.workers == 4
    assert config.allowed_registries == ()
    assert config.monitoring_namespace == "monitoring"
    assert config.sidecar_image == DEFAULT_SIDECAR_IMAGE
    assert config.image_pull_policy == "Always"
    assert config.ca_key_algorithm == "ECDSA-P256"
    assert config.ca_duration_hours == 24 * 365
    assert config.dns == DNSPeer(namespace="kube-system", pod_labels={"k8s-app": "kube-dns"})
    assert config.cluster_domain == "cluster.local"
    assert config.encrypting_provisioners["ebs.csi.aws.com"] == EncryptionParameter(
        parameter="encrypted", values=("true",)
    )


def test_default_sidecar_image_is_pinned() -> None:
    assert image_digest.is_pinned(DEFAULT_SIDECAR_IMAGE)


def test_load_without_a_file_gives_the_defaults() -> None:
    assert OperatorConfig.load(None) == OperatorConfig()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert OperatorConfig.load(write(tmp_path, "").read_text()) == OperatorConfig()


def test_load_reads_camel_case_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "watchNamespaces": ["ml-prod", "ml-dev"],
            "resyncSeconds": 10,
            "allowedRegistries": ["registry.example.com"],
            "sidecarImage": SIDECAR,
            "monitoringNamespace": "prometheus",
            "caKeyAlgorithm": "RSA-3072",
            "caDurationHours": 72,
            "dns": {"namespace": "dns", "podLabels": {"app": "coredns"}},
            "encryptingProvisioners": {"csi.example.com": {"parameter": "encrypt", "values": ["yes"]}},
            "clusterDomain": "corp.internal",
        },
    )
    config = OperatorConfig.load(path.read_text())

    assert config.watch_namespaces == ("ml-prod", "ml-dev")
    assert config.resync_seconds == 10.0
    assert config.allowed_registries == ("registry.example.com",)
    assert config.sidecar_image == SIDECAR
    assert config.monitoring_namespace == "prometheus"
    assert config.ca_key_algorithm == "RSA-3072"
    assert config.ca_duration_hours == 72
    assert config.dns == DNSPeer(namespace="dns", pod_labels={"app": "coredns"})
    assert config.encrypting_provisioners == {
        "csi.example.com": EncryptionParameter(parameter="encrypt", values=("yes",))
    }
    assert config.cluster_domain == "corp.internal"


@pytest.mark.parametrize(
    ("file", "overrides", "field", "expected"),
    [
        ({"namespace": "from-file"}, {"namespace": "from-env"}, "namespace", "from-env"),
        ({"namespace": "from-file"}, {"namespace": None}, "namespace", "from-file"),
        ({}, {"monitoring_namespace": "prom"}, "monitoring_namespace", "prom"),
        (
            {"monitoringNamespace": "from-file"},
            {"monitoring_namespace": "prom"},
            "monitoring_namespace",
            "prom",
        ),
    ],
    ids=["override wins", "None keeps the file", "override alone", "override of a camelCase key"],
)
def test_overrides(
    tmp_path: Path, file: dict[str, Any], overrides: dict[str, Any], field: str, expected: str
) -> None:
    config = OperatorConfig.load(write(tmp_path, file).read_text(), **overrides)

    assert getattr(config, field) == expected


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 65}, "workers"),
        ({"resyncSeconds": 0}, "resyncSeconds"),
        ({"caDurationHours": 47}, "caDurationHours"),
        ({"caKeyAlgorithm": "DSA"}, "caKeyAlgorithm"),
        ({"sidecarImages": "x"}, "sidecarImages"),
        ({"dns": {"namespace": "dns", "labels": {}}}, "dns"),
        ({"encryptingProvisioners": {"x": {"values": ["y"]}}}, "encryptingProvisioners"),
        ({"sidecarImage": "nginx:1.27"}, "sidecarImage"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
        ({"imagePullPolicy": "always"}, "imagePullPolicy"),
    ],
    ids=[
        "no workers",
        "too many workers",
        "no resync",
        "short CA",
        "unknown algorithm",
        "unknown key",
        "unknown dns key",
        "no parameter",
        "sidecar by tag",
        "unknown pull policy",
        "pull policy in lower case",
    ],
)
def test_bad_values_are_refused(tmp_path: Path, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OperatorConfig.load(write(tmp_path, data).read_text())

    assert field in {str(error["loc"][0]) for error in caught.value.errors()}


@pytest.mark.parametrize(
    ("registries", "accepted"),
    [(["registry.example.com"], True), (["registry.example.com/mirror/"], True), (["quay.io"], False)],
    ids=["registry", "registry path", "another registry"],
)
def test_the_sidecar_image_must_come_from_an_allowed_registry(
    tmp_path: Path, registries: list[str], accepted: bool
) -> None:
    path = write(tmp_path, {"allowedRegistries": registries, "sidecarImage": SIDECAR})

    if accepted:
        assert OperatorConfig.load(path.read_text()).sidecar_image == SIDECAR
    else:
        with pytest.raises(
            ValidationError, match=r"sidecarImage \S+ is not from a registry in allowedRegistries"
        ):
            OperatorConfig.load(path.read_text())


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        OperatorConfig().workers = 8  # type: ignore[misc]


@pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
def test_image_pull_policy_is_read_from_the_file(tmp_path: Path, policy: str) -> None:
    config = OperatorConfig.load(write(tmp_path, {"imagePullPolicy": policy}).read_text())

    assert config.image_pull_policy == policy


def test_image_pull_policy_can_be_overridden() -> None:
    assert OperatorConfig.load(
        "imagePullPolicy: Never", image_pull_policy="IfNotPresent"
    ).image_pull_policy == ("IfNotPresent")

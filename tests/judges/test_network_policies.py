"""network-config-analyzer computes who may talk to the model under the rendered NetworkPolicy.

The cluster is fixtures/namespaces.yaml and fixtures/pods.yaml: the declared peers of the examples, and
the pods that must stay out (an impersonator in another tenant's namespace, neighbours in the model's
own namespace and beside each declared peer, other kube-system pods). The model's pods come from the
rendered Deployment itself, so they carry exactly the labels the operator gives them.

The analyzer's dot output lists every allowed connection between two endpoints (pods, or address
ranges that together cover every IPv4 address); the tests compare it with what each SMD declares.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from securemodels.api.v1alpha1 import SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired.controls import network
from securemodels.desired.model import Context, Observed
from securemodels.desired.naming import Owner
from support.manifests import smd
from support.paths import EXAMPLES

FIXTURES = Path(__file__).parent / "fixtures"
TLS = "TCP 8443"
DNS = {"kube-system/coredns": "TCP+UDP 53"}
ENDPOINT = re.compile(r'^\s*"(?P<name>[^"]+)" \[label=', re.MULTILINE)
EDGE = re.compile(
    r'^\s*"(?P<source>[^"]+)" -> "(?P<destination>[^"]+)" \[label="(?P<allowed>[^"]*)"', re.MULTILINE
)


@dataclass(frozen=True)
class Flows:
    """Allowed connections of one model pod: peer -> what is allowed, as the analyzer prints it."""

    ingress: dict[str, str]
    egress: dict[str, str]


# What each example declares, written out by hand from its spec.
DECLARED = {
    "basic": Flows(ingress={"ml-gateway/gateway": TLS}, egress=DNS),
    "full": Flows(
        ingress={"ml-gateway/gateway": TLS, "monitoring/prometheus": "TCP 9090"},
        egress={**DNS, "ml-data/feature-store": "TCP 6379", "10.20.0.0/16": "TCP 443"},
    ),
    "vllm-gpu": Flows(ingress={"ml-gateway/gateway": TLS}, egress=DNS),
    "signed-weights": Flows(ingress={"ml-gateway/gateway": TLS}, egress=DNS),
    "triton-grpc": Flows(ingress={"ml-gateway/gateway": TLS}, egress=DNS),
}
WEAKENED_EXAMPLE = "weakened"


def is_address_range(endpoint: str) -> bool:
    """The analyzer names addresses "10.20.0.0/16" or "0.0.0.0-10.19.255.255", pods "namespace/name"."""
    try:
        for address in endpoint.split("-"):
            ipaddress.ip_network(address)
    except ValueError:
        return False
    return True


FIXTURE_PODS = frozenset(
    f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    for pod in yaml.safe_load((FIXTURES / "pods.yaml").read_text())["items"]
)


@dataclass(frozen=True)
class Analysis:
    smd: dict[str, Any]
    rendered: tuple[dict[str, Any], ...]
    endpoints: frozenset[str]
    allowed: dict[tuple[str, str], str]  # (source, destination) -> connections

    @property
    def model_pods(self) -> frozenset[str]:
        """The model's pods, checked against the rendered Deployment so that no test passes vacuously."""
        deployment = next(item for item in self.rendered if item["kind"] == "Deployment")
        pods = frozenset(
            endpoint
            for endpoint in self.endpoints
            if not is_address_range(endpoint) and endpoint not in FIXTURE_PODS
        )
        # The analyzer models at most two replicas of a workload, enough to see pod-to-pod traffic.
        assert len(pods) == min(deployment["spec"]["replicas"], 2)
        prefix = f"{deployment['metadata']['namespace']}/{deployment['metadata']['name']}-"
        assert all(pod.startswith(prefix) for pod in pods), pods
        return pods

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(endpoint for endpoint in self.endpoints if is_address_range(endpoint))

    def flows(self, pod: str) -> Flows:
        return Flows(
            ingress={
                source: allowed
                for (source, destination), allowed in self.allowed.items()
                if destination == pod
            },
            egress={
                destination: allowed
                for (source, destination), allowed in self.allowed.items()
                if source == pod
            },
        )

    def network_status(self) -> str:
        """The network-isolation verdict the operator reports while its policy is live as rendered."""
        metadata = self.smd["metadata"]
        context = Context(
            owner=Owner(name=metadata["name"], namespace=metadata["namespace"], uid="0"),
            spec=SecureModelDeploymentSpec.model_validate(self.smd["spec"]),
            config=OperatorConfig(),
            now=datetime.now(UTC),
        )
        (policy,) = (item for item in self.rendered if item["kind"] == "NetworkPolicy")
        return network.check(context, Observed(objects={context.names.network_policy: policy})).status


Analyze = Callable[[str], Analysis]


@pytest.fixture(scope="module")
def analyze(nca: Path, render: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Analyze:
    """Render the SMD in manifest text, then compute connectivity in the fixture cluster."""
    workdir = tmp_path_factory.mktemp("nca")

    @functools.cache
    def run(source: str) -> Analysis:
        rendered = workdir / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.yaml"
        rendered.write_text(render(source))
        result = subprocess.run(
            [
                nca,
                "--connectivity",
                rendered,
                "--pod_list",
                rendered,
                "--pod_list",
                FIXTURES / "pods.yaml",
                "--ns_list",
                FIXTURES / "namespaces.yaml",
                "--output_endpoints",
                "pods",
                "--output_format",
                "dot",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return Analysis(
            smd=next(
                item
                for item in yaml.safe_load_all(source)
                if item and item["kind"] == "SecureModelDeployment"
            ),
            rendered=tuple(yaml.safe_load_all(rendered.read_text())),
            endpoints=frozenset(match["name"] for match in ENDPOINT.finditer(result.stdout)),
            allowed={
                (edge["source"], edge["destination"]): edge["allowed"]
                for edge in EDGE.finditer(result.stdout)
            },
        )

    return run


def example(name: str) -> str:
    return (EXAMPLES / f"{name}.yaml").read_text()


def test_every_example_is_analyzed() -> None:
    assert {path.stem for path in EXAMPLES.glob("*.yaml")} == {*DECLARED, WEAKENED_EXAMPLE}


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_exactly_the_declared_peers_reach_the_model(analyze: Analyze, name: str) -> None:
    analysis = analyze(example(name))
    for pod in analysis.model_pods:
        assert analysis.flows(pod).ingress == DECLARED[name].ingress, pod


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_the_model_reaches_only_dns_and_declared_egress(analyze: Analyze, name: str) -> None:
    analysis = analyze(example(name))
    for pod in analysis.model_pods:
        assert analysis.flows(pod).egress == DECLARED[name].egress, pod


def test_allow_ingress_from_anywhere_opens_the_tls_port_to_every_namespace(analyze: Analyze) -> None:
    analysis = analyze(example(WEAKENED_EXAMPLE))
    for pod in analysis.model_pods:
        assert analysis.flows(pod).ingress == dict.fromkeys(FIXTURE_PODS, TLS), pod
        assert analysis.flows(pod).egress == DNS, pod
    assert analysis.network_status() == "Weakened"


INGRESS_PEERS = {
    "gateway-namespace": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml-gateway"}}
    },
    "every-namespace": {"namespaceSelector": {}},
    "every-address": {"cidr": "0.0.0.0/0"},
    # The API server labels every namespace with its name, so this selects all of them.
    "every-namespace-by-expression": {
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]
        }
    },
}


@pytest.mark.parametrize("peer", sorted(INGRESS_PEERS))
def test_weakened_status_matches_the_analyzed_reach(analyze: Analyze, peer: str) -> None:
    # The opt-in is set for every peer, so each SMD is one the CRD accepts; the status must still tell
    # whether the model is really open to everyone.
    manifest = smd(
        "reach-probe",
        "ml-prod",
        network={"ingress": [{"from": [INGRESS_PEERS[peer]]}], "allowIngressFromAnywhere": True},
    )
    analysis = analyze(yaml.safe_dump(manifest))
    (pod,) = analysis.model_pods
    sources = analysis.flows(pod).ingress.keys()
    assert analysis.addresses, "the analyzer always models addresses outside the cluster"
    from_anywhere = sources >= FIXTURE_PODS or analysis.addresses <= sources
    status = analysis.network_status()
    assert (status == "Weakened") == from_anywhere, (
        f"network-isolation reports {status}; reachable from every pod or every address: {from_anywhere}"
    )

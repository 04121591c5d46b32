"""Control network-isolation: one default-deny policy that lets through only what the spec declares."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.api.v1alpha1 import TLS_PORT
from securemodels.config import DNSPeer, OperatorConfig
from securemodels.desired import naming
from securemodels.desired.compare import selector_matches
from securemodels.desired.controls import network
from securemodels.desired.model import Manifest
from unit.builders import Mutation, build, context, find, kinds, observe, owner, tampered

GATEWAY = {
    "namespaceSelector": {"matchLabels": {"team": "gw"}},
    "podSelector": {"matchLabels": {"app": "gateway"}},
}
ANY_NAMESPACE: dict[str, Any] = {"namespaceSelector": {}}
EXISTS_NAME = {"key": "kubernetes.io/metadata.name", "operator": "Exists"}
IN_NAME = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml-gw"]}
DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def policy(**overrides: Any) -> Manifest:
    return network.network_policy(context(**overrides))


def test_build_holds_exactly_one_policy_named_after_the_smd() -> None:
    owned = build(context()).owned

    assert kinds(owned).count("NetworkPolicy") == 1
    assert find(owned, "NetworkPolicy")["metadata"]["name"] == "fraud-network"


def test_policy_selects_the_model_pods_in_both_directions() -> None:
    spec = policy()["spec"]

    assert spec["podSelector"] == {"matchLabels": naming.selector_labels(owner())}
    assert selector_matches(spec["podSelector"], naming.labels(owner(), "model"))
    assert spec["policyTypes"] == ["Ingress", "Egress"]


def test_without_declarations_only_dns_is_allowed() -> None:
    spec = policy()["spec"]

    assert spec["ingress"] == []
    assert spec["egress"] == [DNS]


def test_declared_ingress_reaches_only_the_mtls_port() -> None:
    spec = policy(
        network={
            "ingress": [
                {"from": [GATEWAY, {"podSelector": {"matchLabels": {"app": "batch"}}}]},
                {"from": [{"cidr": "10.20.0.0/16"}]},
            ]
        }
    )["spec"]

    assert spec["ingress"] == [
        {
            "from": [GATEWAY, {"podSelector": {"matchLabels": {"app": "batch"}}}],
            "ports": [{"port": TLS_PORT, "protocol": "TCP"}],
        },
        {"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": TLS_PORT, "protocol": "TCP"}]},
    ]


def test_match_expressions_are_copied_and_values_left_out_when_empty() -> None:
    peer = {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "team", "operator": "In", "values": ["gw", "edge"]},
                {"key": "sandbox", "operator": "DoesNotExist"},
            ]
        }
    }
    spec = policy(network={"ingress": [{"from": [peer]}]})["spec"]

    assert spec["ingress"][0]["from"] == [peer]


def test_metrics_port_is_open_only_to_the_monitoring_namespace() -> None:
    spec = network.policy_spec(
        context(config=OperatorConfig(monitoring_namespace="prometheus"), model={"metricsPort": 9090})
    )

    assert spec["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}}],
            "ports": [{"port": 9090, "protocol": "TCP"}],
        }
    ]


def test_dns_peer_comes_from_the_configuration() -> None:
    config = OperatorConfig(dns=DNSPeer(namespace="dns", pod_labels={"app": "coredns"}))
    (dns,) = network.policy_spec(context(config=config))["egress"]

    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
            "podSelector": {"matchLabels": {"app": "coredns"}},
        }
    ]


def test_declared_egress_keeps_its_ports_and_protocols() -> None:
    egress = [
        {"to": [{"cidr": "10.20.0.0/16"}], "ports": [{"port": 443}, {"port": 8125, "protocol": "UDP"}]},
        {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]},
    ]
    spec = policy(network={"egress": egress})["spec"]

    assert spec["egress"] == [
        DNS,
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            "ports": [{"port": 443, "protocol": "TCP"}, {"port": 8125, "protocol": "UDP"}],
        },
        {
            "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        },
    ]


WEAKENINGS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("nothing declared", {}, ()),
    ("a narrow peer", {"ingress": [{"from": [GATEWAY]}]}, ()),
    ("every pod of the own namespace", {"ingress": [{"from": [{"podSelector": {}}]}]}, ()),
    (
        "some pods of every namespace",
        {"ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}]}]},
        (),
    ),
    ("a private range", {"egress": [{"to": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 443}]}]}, ()),
    (
        "every namespace",
        {"ingress": [{"from": [ANY_NAMESPACE]}], "allowIngressFromAnywhere": True},
        ("IngressFromAnywhere",),
    ),
    (
        "every pod of every namespace",
        {
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {}}]}],
            "allowIngressFromAnywhere": True,
        },
        ("IngressFromAnywhere",),
    ),
    (
        "every IPv4 address",
        {"ingress": [{"from": [GATEWAY, {"cidr": "0.0.0.0/0"}]}], "allowIngressFromAnywhere": True},
        ("IngressFromAnywhere",),
    ),
    (
        "every IPv6 address out",
        {"egress": [{"to": [{"cidr": "::/0"}], "ports": [{"port": 443}]}], "allowEgressToAnywhere": True},
        ("EgressToAnywhere",),
    ),
    (
        "both directions",
        {
            "ingress": [{"from": [ANY_NAMESPACE]}],
            "egress": [{"to": [{"cidr": "0.0.0.0/0"}], "ports": [{"port": 443}]}],
            "allowIngressFromAnywhere": True,
            "allowEgressToAnywhere": True,
        },
        ("IngressFromAnywhere", "EgressToAnywhere"),
    ),
    (
        "a namespace selector made only of Exists",
        {
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [EXISTS_NAME]}}]}],
            "allowIngressFromAnywhere": True,
        },
        ("IngressFromAnywhere",),
    ),
    (
        "an In requirement narrows",
        {"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [IN_NAME]}}]}]},
        (),
    ),
    (
        "two halves of the IPv4 space",
        {
            "egress": [{"to": [{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}], "ports": [{"port": 443}]}],
            "allowEgressToAnywhere": True,
        },
        ("EgressToAnywhere",),
    ),
    (
        "half of the IPv4 space",
        {"egress": [{"to": [{"cidr": "0.0.0.0/1"}], "ports": [{"port": 443}]}]},
        (),
    ),
]


@pytest.mark.parametrize(
    ("declared", "expected"), [c[1:] for c in WEAKENINGS], ids=[c[0] for c in WEAKENINGS]
)
def test_weakenings(declared: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert network.weakenings(context(network=declared)) == expected


def test_check_passes_the_built_policy() -> None:
    ctx = context(network={"ingress": [{"from": [GATEWAY]}]}, model={"metricsPort": 9090})
    result = network.check(ctx, observe(ctx).network_policies)

    assert (result.name, result.status, result.reason) == ("network-isolation", "Pass", "DefaultDeny")
    assert result.weakenings == ()


def test_check_ignores_fields_the_api_server_adds() -> None:
    ctx = context()
    (own,) = observe(ctx).network_policies
    live = tampered(own, lambda item: item["metadata"].update(resourceVersion="7", generation=1))
    del live["spec"]["ingress"]  # the API server leaves out empty lists

    assert network.check(ctx, (live,)).status == "Pass"


def test_check_fails_when_the_policy_is_deleted() -> None:
    result = network.check(context(), ())

    assert (result.status, result.reason) == ("Fail", "PolicyMissing")
    assert "fraud-network" in result.message


def ingress_port(port: int) -> Mutation:
    return lambda item: item["spec"]["ingress"][0]["ports"][0].update(port=port)


CHANGED: list[tuple[str, Mutation]] = [
    ("ingress port", ingress_port(8080)),
    (
        "extra ingress peer",
        lambda item: item["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
    ),
    ("extra ingress rule", lambda item: item["spec"]["ingress"].append({})),
    ("egress to everything", lambda item: item["spec"]["egress"].append({})),
    ("DNS rule widened", lambda item: item["spec"]["egress"][0]["to"][0].pop("podSelector")),
    ("egress no longer enforced", lambda item: item["spec"].update(policyTypes=["Ingress"])),
    ("other pods selected", lambda item: item["spec"].update(podSelector={"matchLabels": {"app": "other"}})),
]


@pytest.mark.parametrize("mutation", [c[1] for c in CHANGED], ids=[c[0] for c in CHANGED])
def test_check_fails_when_the_policy_rules_change(mutation: Mutation) -> None:
    ctx = context(network={"ingress": [{"from": [GATEWAY]}]})
    (own,) = observe(ctx).network_policies
    result = network.check(ctx, (tampered(own, mutation),))

    assert (result.status, result.reason) == ("Fail", "PolicyChanged")


def foreign(name: str, pod_selector: dict[str, Any], **rules: Any) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "ml-prod"},
        "spec": {"podSelector": pod_selector, **rules},
    }


FOREIGN: list[tuple[str, Manifest, bool]] = [
    ("allow-all ingress to every pod", foreign("allow-all", {}, ingress=[{}]), True),
    (
        "egress from the model",
        foreign("open", {"matchLabels": {"app.kubernetes.io/instance": "fraud"}}, egress=[{}]),
        True,
    ),
    (
        "expression selecting the model",
        foreign(
            "expr",
            {
                "matchExpressions": [
                    {"key": "app.kubernetes.io/instance", "operator": "In", "values": ["fraud"]}
                ]
            },
            ingress=[{"from": [{"podSelector": {}}]}],
        ),
        True,
    ),
    ("default deny for the namespace", foreign("deny-all", {}, policyTypes=["Ingress", "Egress"]), False),
    ("rules for other pods", foreign("db", {"matchLabels": {"app": "db"}}, ingress=[{}]), False),
    (
        "rules for another SMD",
        foreign("other", {"matchLabels": {"app.kubernetes.io/instance": "other"}}, ingress=[{}]),
        False,
    ),
]


@pytest.mark.parametrize(("other", "widens"), [c[1:] for c in FOREIGN], ids=[c[0] for c in FOREIGN])
def test_check_fails_on_foreign_policies_that_allow_more(other: Manifest, widens: bool) -> None:
    ctx = context()
    result = network.check(ctx, (*observe(ctx).network_policies, other))

    if widens:
        assert (result.status, result.reason) == ("Fail", "ForeignPolicyAllowsMore")
        assert other["metadata"]["name"] in result.message
    else:
        assert result.status == "Pass"


def test_check_reports_a_weakened_ingress_with_the_opt_in_field() -> None:
    ctx = context(network={"ingress": [{"from": [ANY_NAMESPACE]}], "allowIngressFromAnywhere": True})
    result = network.check(ctx, observe(ctx).network_policies)

    assert (result.status, result.weakenings) == ("Weakened", ("IngressFromAnywhere",))
    assert result.reason == "IngressFromAnywhere"
    assert "spec.network.allowIngressFromAnywhere" in result.message


def test_check_reports_both_weakenings() -> None:
    ctx = context(
        network={
            "ingress": [{"from": [{"cidr": "0.0.0.0/0"}]}],
            "egress": [{"to": [{"cidr": "0.0.0.0/0"}], "ports": [{"port": 443}]}],
            "allowIngressFromAnywhere": True,
            "allowEgressToAnywhere": True,
        }
    )
    result = network.check(ctx, observe(ctx).network_policies)

    assert (result.status, result.weakenings) == ("Weakened", ("IngressFromAnywhere", "EgressToAnywhere"))
    assert "spec.network.allowIngressFromAnywhere" in result.message
    assert "spec.network.allowEgressToAnywhere" in result.message


def test_a_failure_outranks_a_weakening() -> None:
    ctx = context(network={"ingress": [{"from": [ANY_NAMESPACE]}], "allowIngressFromAnywhere": True})

    assert network.check(ctx, ()).status == "Fail"


def test_cidrs_that_together_cover_every_address_are_refused_without_the_opt_in() -> None:
    halves = {"egress": [{"to": [{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}], "ports": [{"port": 443}]}]}

    blocker = network.preflight(context(network=halves))
    accepted = network.preflight(context(network={**halves, "allowEgressToAnywhere": True}))

    assert blocker is not None
    assert blocker.reason == "NetworkTooBroad"
    assert "spec.network.allowEgressToAnywhere" in blocker.message
    assert accepted is None

"""Control network-isolation: one default-deny policy that lets through only what the spec declares."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from securemodels.api.v1alpha1 import TLS_PORT
from securemodels.config import DNSPeer, OperatorConfig
from securemodels.desired import naming
from securemodels.desired.controls import network
from securemodels.desired.model import Context, ControlResult, Manifest, Observed
from securemodels.desired.selectors import selector_matches
from unit.builders import (
    NAMESPACE,
    POD_NAME,
    POD_TEMPLATE_HASH,
    Mutation,
    altered,
    build,
    context,
    find,
    kinds,
    live,
    observe,
    owner,
    removed,
    with_pod,
)

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
        "a /8's worth in two /9s",
        {"egress": [{"to": [{"cidr": "0.0.0.0/9"}, {"cidr": "128.0.0.0/9"}], "ports": [{"port": 443}]}]},
        (),
    ),
]


@pytest.mark.parametrize(
    ("declared", "expected"), [c[1:] for c in WEAKENINGS], ids=[c[0] for c in WEAKENINGS]
)
def test_weakenings(declared: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert network.weakenings(context(network=declared)) == expected


def check(ctx: Context, observed: Observed) -> ControlResult:
    return network.check(ctx, observed)


DECLARED: dict[str, Any] = {"network": {"ingress": [{"from": [GATEWAY]}]}, "model": {"metricsPort": 9090}}


def declared() -> Context:
    return context(**DECLARED)


def test_check_passes_the_built_policy_with_the_live_pod() -> None:
    ctx = declared()
    result = check(ctx, observe(ctx))

    assert (result.name, result.status, result.reason) == ("network-isolation", "Pass", "DefaultDeny")
    assert result.weakenings == ()


def test_check_ignores_fields_the_api_server_adds() -> None:
    ctx = context()

    def as_stored(item: Manifest) -> None:
        item["metadata"].update(resourceVersion="7", generation=1)
        del item["spec"]["ingress"]  # the API server leaves out empty lists

    assert check(ctx, altered(observe(ctx), "NetworkPolicy", as_stored)).status == "Pass"


def test_check_fails_when_the_policy_is_deleted() -> None:
    ctx = context()
    result = check(ctx, removed(observe(ctx), "NetworkPolicy"))

    assert (result.status, result.reason) == ("Fail", "PolicyMissing")
    assert "NetworkPolicy fraud-network does not exist" in result.message


def on_spec(mutation: Mutation) -> Mutation:
    return lambda policy: mutation(policy["spec"])


POLICY_CHANGES: list[tuple[str, Mutation, str]] = [
    (
        "egress no longer isolated",
        on_spec(lambda spec: spec.update(policyTypes=["Ingress"])),
        "NetworkPolicy fraud-network does not isolate both directions",
    ),
    (
        "the live pod no longer selected",
        on_spec(lambda spec: spec.update(podSelector={"matchLabels": {"app": "other"}})),
        f"NetworkPolicy fraud-network does not select the model's pods {POD_NAME}",
    ),
    (
        "ingress to the model port",
        on_spec(lambda spec: spec["ingress"][0]["ports"][0].update(port=8080)),
        "NetworkPolicy fraud-network admits ingress to ports other than 8443",
    ),
    (
        "ingress to a range from the TLS port",
        on_spec(lambda spec: spec["ingress"][0]["ports"][0].update(endPort=9000)),
        "NetworkPolicy fraud-network admits ingress to ports other than 8443",
    ),
    (
        "ingress to every port",
        on_spec(lambda spec: spec["ingress"][0].pop("ports")),
        "NetworkPolicy fraud-network admits ingress to ports other than 8443",
    ),
    (
        "a rule admitting everything",
        on_spec(lambda spec: spec["ingress"].append({})),
        "NetworkPolicy fraud-network admits ingress to ports other than 8443",
    ),
    (
        "egress to a port range",
        on_spec(lambda spec: spec["egress"][0]["ports"][0].update(endPort=65535)),
        "NetworkPolicy fraud-network allows egress to a range of ports or to every port",
    ),
    (
        "egress to every port",
        on_spec(lambda spec: spec["egress"].append({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]})),
        "NetworkPolicy fraud-network allows egress to a range of ports or to every port",
    ),
    (
        "egress to everything",
        on_spec(lambda spec: spec["egress"].append({})),
        "NetworkPolicy fraud-network allows egress to a range of ports or to every port",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "problem"), [c[1:] for c in POLICY_CHANGES], ids=[c[0] for c in POLICY_CHANGES]
)
def test_check_judges_the_policy_by_what_it_lets_through(mutation: Mutation, problem: str) -> None:
    ctx = declared()
    result = check(ctx, altered(observe(ctx), "NetworkPolicy", mutation))

    assert (result.status, result.reason) == ("Fail", "PolicyChanged")
    assert problem in result.message


def test_check_fails_on_ingress_to_every_port_of_a_protocol() -> None:
    """A port entry without a number admits every port of its protocol."""
    ctx = context(network={"ingress": [{"from": [GATEWAY]}]})
    every_tcp_port = on_spec(lambda spec: spec["ingress"][0].update(ports=[{"protocol": "TCP"}]))
    result = check(ctx, altered(observe(ctx), "NetworkPolicy", every_tcp_port))

    assert result.status == "Fail"
    assert "admits ingress to ports other than 8443" in result.message


def test_check_accepts_ingress_to_the_metrics_port() -> None:
    ctx = declared()

    assert live(observe(ctx), "NetworkPolicy")["spec"]["ingress"][-1]["ports"] == [
        {"port": 9090, "protocol": "TCP"}
    ]
    assert check(ctx, observe(ctx)).status == "Pass"


def test_check_fails_when_a_live_pod_is_not_selected_by_the_policy() -> None:
    ctx = context()
    unlabelled = with_pod(observe(ctx), lambda pod: pod["metadata"].update(labels={"app": "elsewhere"}))
    result = check(ctx, unlabelled)

    assert result.status == "Fail"
    assert f"does not select the model's pods {POD_NAME}" in result.message


def foreign(name: str, pod_selector: dict[str, Any], **rules: Any) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"podSelector": pod_selector, **rules},
    }


INSTANCE = "app.kubernetes.io/instance"
FOREIGN: list[tuple[str, Manifest, bool]] = [
    ("allow-all ingress to every pod", foreign("allow-all", {}, ingress=[{}]), True),
    ("egress from the model", foreign("open", {"matchLabels": {INSTANCE: "fraud"}}, egress=[{}]), True),
    (
        "expression selecting the model",
        foreign(
            "expr",
            {"matchExpressions": [{"key": INSTANCE, "operator": "In", "values": ["fraud"]}]},
            ingress=[{"from": [{"podSelector": {}}]}],
        ),
        True,
    ),
    (
        "the live pod by its pod-template-hash",
        foreign("by-hash", {"matchLabels": {"pod-template-hash": POD_TEMPLATE_HASH}}, ingress=[{}]),
        True,
    ),
    (
        "every pod but another app's",
        foreign(
            "not-db",
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]},
            egress=[{}],
        ),
        True,
    ),
    ("default deny for the namespace", foreign("deny-all", {}, policyTypes=["Ingress", "Egress"]), False),
    ("empty rule lists", foreign("empty", {}, ingress=[], egress=[]), False),
    ("rules for other pods", foreign("db", {"matchLabels": {"app": "db"}}, ingress=[{}]), False),
    ("rules for another SMD", foreign("other", {"matchLabels": {INSTANCE: "other"}}, ingress=[{}]), False),
    (
        "another hash",
        foreign("old-hash", {"matchLabels": {"pod-template-hash": "0000000000"}}, ingress=[{}]),
        False,
    ),
]


@pytest.mark.parametrize(("other", "widens"), [c[1:] for c in FOREIGN], ids=[c[0] for c in FOREIGN])
def test_check_fails_on_foreign_policies_that_allow_more(other: Manifest, widens: bool) -> None:
    ctx = context()
    observed = replace(observe(ctx), foreign_policies=(other,))
    result = check(ctx, observed)

    if widens:
        assert (result.status, result.reason) == ("Fail", "ForeignPolicyAllowsMore")
        assert (
            "NetworkPolicies not managed by the operator allow more traffic to or from the model: "
            + other["metadata"]["name"]
        ) in result.message
    else:
        assert result.status == "Pass", result.message


def test_foreign_policies_select_the_model_by_its_template_labels_even_without_pods() -> None:
    ctx = context()
    observed = replace(
        observe(ctx),
        pods=(),
        foreign_policies=(foreign("open", {"matchLabels": {INSTANCE: "fraud"}}, ingress=[{}]),),
    )

    assert check(ctx, observed).reason == "ForeignPolicyAllowsMore"


def test_several_widening_policies_are_named_in_order() -> None:
    ctx = context()
    observed = replace(
        observe(ctx), foreign_policies=(foreign("zeta", {}, ingress=[{}]), foreign("alpha", {}, egress=[{}]))
    )

    assert check(ctx, observed).message.endswith("alpha, zeta")


def service(name: str, selector: dict[str, str] | None) -> Manifest:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if selector is not None:
        spec["selector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


SERVICES: list[tuple[str, Manifest, bool]] = [
    ("by instance", service("plain", {INSTANCE: "fraud"}), True),
    ("by pod-template-hash", service("by-hash", {"pod-template-hash": POD_TEMPLATE_HASH}), True),
    ("by the app name", service("every-model", {"app.kubernetes.io/name": "secure-model"}), True),
    ("another SMD's pods", service("other", {INSTANCE: "other"}), False),
    ("no selector", service("manual", None), False),
    ("an empty selector", service("empty", {}), False),
]


@pytest.mark.parametrize(("other", "exposes"), [c[1:] for c in SERVICES], ids=[c[0] for c in SERVICES])
def test_check_fails_on_foreign_services_that_select_the_pods(other: Manifest, exposes: bool) -> None:
    ctx = context()
    result = check(ctx, replace(observe(ctx), foreign_services=(other,)))

    if exposes:
        assert (result.status, result.reason) == ("Fail", "PolicyChanged")
        assert (
            f"Services not managed by the operator select the model's pods: {other['metadata']['name']}"
            in result.message
        )
    else:
        assert result.status == "Pass", result.message


def test_a_widening_policy_with_other_problems_is_reported_as_a_changed_policy() -> None:
    ctx = context()
    observed = replace(
        observe(ctx),
        foreign_policies=(foreign("allow-all", {}, ingress=[{}]),),
        foreign_services=(service("plain", {INSTANCE: "fraud"}),),
    )
    result = check(ctx, observed)

    assert (result.status, result.reason) == ("Fail", "PolicyChanged")
    assert "allow-all" in result.message
    assert "plain" in result.message


def test_check_reports_the_findings_of_the_generic_judges() -> None:
    ctx = context()
    result = check(
        ctx, replace(observe(ctx), findings={network.NAME: ("NetworkPolicy fraud-network was changed",)})
    )

    assert (result.status, result.reason) == ("Fail", "PolicyChanged")
    assert result.message == "NetworkPolicy fraud-network was changed"


def test_check_reports_a_weakened_ingress_with_the_opt_in_field() -> None:
    ctx = context(network={"ingress": [{"from": [ANY_NAMESPACE]}], "allowIngressFromAnywhere": True})
    result = check(ctx, observe(ctx))

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
    result = check(ctx, observe(ctx))

    assert (result.status, result.weakenings) == ("Weakened", ("IngressFromAnywhere", "EgressToAnywhere"))
    assert result.reason == "IngressFromAnywhere,EgressToAnywhere"
    assert "spec.network.allowIngressFromAnywhere" in result.message
    assert "spec.network.allowEgressToAnywhere" in result.message


def test_a_failure_outranks_a_weakening() -> None:
    ctx = context(network={"ingress": [{"from": [ANY_NAMESPACE]}], "allowIngressFromAnywhere": True})

    assert check(ctx, removed(observe(ctx), "NetworkPolicy")).status == "Fail"
    assert (
        check(ctx, replace(observe(ctx), foreign_policies=(foreign("x", {}, ingress=[{}]),))).status == "Fail"
    )


def egress(*cidrs: str) -> dict[str, Any]:
    return {"egress": [{"to": [{"cidr": cidr}], "ports": [{"port": 443}]} for cidr in cidrs]}


def ingress(*cidrs: str) -> dict[str, Any]:
    return {"ingress": [{"from": [{"cidr": cidr} for cidr in cidrs]}]}


TOGETHER: list[tuple[str, dict[str, Any], str | None]] = [
    ("one /8", egress("10.0.0.0/8"), None),
    ("two /9s: a /8's worth", egress("0.0.0.0/9", "128.0.0.0/9"), None),
    ("three /9s", egress("0.0.0.0/9", "128.0.0.0/9", "64.0.0.0/9"), "EgressToAnywhere"),
    ("a /8 and a /9", egress("10.0.0.0/8", "11.0.0.0/9"), "EgressToAnywhere"),
    ("two /8s", egress("10.0.0.0/8", "11.0.0.0/8"), "EgressToAnywhere"),
    ("overlaps count once", egress("0.0.0.0/9", "0.0.0.0/10", "64.0.0.0/10"), None),
    ("the same /8 twice", egress("10.0.0.0/8", "10.0.0.0/8"), None),
    ("IPv4 and IPv6 apart", egress("10.0.0.0/8", "2001:db8::/32"), None),
    ("two IPv6 /33s", egress("2001:db8::/33", "2001:db8:8000::/33"), None),
    ("three IPv6 /33s", egress("2001:db8::/33", "2001:db8:8000::/33", "2001:db9::/33"), "EgressToAnywhere"),
    ("ingress from two /8s", ingress("10.0.0.0/8", "11.0.0.0/8"), "IngressFromAnywhere"),
    ("ingress from sixteen /12s", ingress(*(f"{16 + index}.0.0.0/12" for index in range(16))), None),
    (
        "ingress from seventeen /12s",
        ingress(*(f"{16 + index}.0.0.0/12" for index in range(17))),
        "IngressFromAnywhere",
    ),
]


@pytest.mark.parametrize(("declared", "too_broad"), [c[1:] for c in TOGETHER], ids=[c[0] for c in TOGETHER])
def test_preflight_judges_cidrs_by_the_addresses_they_cover_together(
    declared: dict[str, Any], too_broad: str | None
) -> None:
    blocker = network.preflight(context(network=declared), Observed())

    if too_broad is None:
        assert blocker is None
    else:
        assert blocker is not None
        assert blocker.reason == network.Reason.TOO_BROAD
        assert blocker.message.startswith(f"{too_broad} without spec.network.allow")
        assert "cover more than a /8 of IPv4 or a /32 of IPv6" in blocker.message


def test_preflight_accepts_broad_cidrs_with_the_opt_in() -> None:
    halves = egress("0.0.0.0/9", "128.0.0.0/9", "64.0.0.0/9")

    assert network.preflight(context(network={**halves, "allowEgressToAnywhere": True}), Observed()) is None
    assert (
        network.preflight(context(network={**halves, "allowIngressFromAnywhere": True}), Observed())
        is not None
    )


def test_preflight_names_both_directions() -> None:
    broad = {**egress("10.0.0.0/8", "11.0.0.0/8"), **ingress("10.0.0.0/8", "11.0.0.0/8")}
    blocker = network.preflight(context(network=broad), Observed())

    assert blocker is not None
    assert "spec.network.allowIngressFromAnywhere" in blocker.message
    assert "spec.network.allowEgressToAnywhere" in blocker.message


def test_addresses_covered_count_overlaps_once_and_families_apart() -> None:
    assert network.addresses_covered(["10.0.0.0/8", "10.0.0.0/9", "2001:db8::/127"]) == (1 << 24, 2)
    assert network.addresses_covered([]) == (0, 0)

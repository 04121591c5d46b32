"""Control `network-isolation`: the model's pods accept and open only the connections the spec declares.

One NetworkPolicy per SMD selects its pods for both directions, which denies everything by default;
its rules then allow the declared ingress peers (to the mTLS port only), cluster DNS, the declared egress
destinations and ports, and metrics scraping from the monitoring namespace. A compromised model then
cannot reach the rest of the cluster or the internet, and nothing undeclared can reach it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from securemodels.api.v1alpha1 import TLS_PORT, LabelSelector, Peer
from securemodels.desired import naming
from securemodels.desired.compare import carries, selector_matches
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest

NAME = "network-isolation"
CONDITION = "NetworkIsolated"
PURPOSE = "network"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS_FROM_ANYWHERE = "IngressFromAnywhere"
EGRESS_TO_ANYWHERE = "EgressToAnywhere"
_OPT_IN_FIELDS = {
    INGRESS_FROM_ANYWHERE: "spec.network.allowIngressFromAnywhere",
    EGRESS_TO_ANYWHERE: "spec.network.allowEgressToAnywhere",
}


def _selector(selector: LabelSelector) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if selector.match_labels:
        result["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        result["matchExpressions"] = [
            {
                "key": item.key,
                "operator": item.operator,
                **({"values": list(item.values)} if item.values else {}),
            }
            for item in selector.match_expressions
        ]
    return result


def _peer(peer: Peer) -> dict[str, Any]:
    if peer.cidr is not None:
        return {"ipBlock": {"cidr": peer.cidr}}
    result: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        result["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        result["podSelector"] = _selector(peer.pod_selector)
    return result


def _broad(selector: LabelSelector | None) -> bool:
    """Only a label value or an In requirement narrows a selector: Exists, NotIn and DoesNotExist can
    match every namespace (each carries kubernetes.io/metadata.name)."""
    if selector is None:
        return True
    return not selector.match_labels and not any(item.operator == "In" for item in selector.match_expressions)


def _covers_every_address(cidrs: list[str]) -> bool:
    """Together, e.g. 0.0.0.0/1 and 128.0.0.0/1, the blocks span a whole address family."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
    v4 = [network for network in networks if isinstance(network, ipaddress.IPv4Network)]
    v6 = [network for network in networks if isinstance(network, ipaddress.IPv6Network)]
    return list(ipaddress.collapse_addresses(v4)) == [ipaddress.IPv4Network("0.0.0.0/0")] or list(
        ipaddress.collapse_addresses(v6)
    ) == [ipaddress.IPv6Network("::/0")]


def reaches_anywhere(peers: list[Peer]) -> bool:
    """Every pod in every namespace, or every address."""
    if any(
        peer.namespace_selector is not None and _broad(peer.namespace_selector) and _broad(peer.pod_selector)
        for peer in peers
    ):
        return True
    return _covers_every_address([peer.cidr for peer in peers if peer.cidr is not None])


def preflight(context: Context) -> Blocker | None:
    """The CRD refuses single peers that reach anywhere; CIDRs that only together cover every address
    get past it and are refused here, unless the spec opts in."""
    network = context.spec.network
    opted_in = {
        INGRESS_FROM_ANYWHERE: network.allow_ingress_from_anywhere,
        EGRESS_TO_ANYWHERE: network.allow_egress_to_anywhere,
    }
    refused = [item for item in weakenings(context) if not opted_in[item]]
    if not refused:
        return None
    return Blocker(
        "NetworkTooBroad",
        "; ".join(
            f"{item} without {_OPT_IN_FIELDS[item]}: the declared peers together cover every address"
            for item in refused
        ),
    )


def weakenings(context: Context) -> tuple[str, ...]:
    network = context.spec.network
    found = []
    if reaches_anywhere([peer for rule in network.ingress for peer in rule.from_]):
        found.append(INGRESS_FROM_ANYWHERE)
    if reaches_anywhere([peer for rule in network.egress for peer in rule.to]):
        found.append(EGRESS_TO_ANYWHERE)
    return tuple(found)


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def policy_spec(context: Context) -> dict[str, Any]:
    spec, config = context.spec, context.config
    ingress: list[dict[str, Any]] = [
        {"from": [_peer(peer) for peer in rule.from_], "ports": [{"port": TLS_PORT, "protocol": "TCP"}]}
        for rule in spec.network.ingress
    ]
    if spec.model.metrics_port is not None:
        ingress.append(
            {
                "from": [_namespace(config.monitoring_namespace)],
                "ports": [{"port": spec.model.metrics_port, "protocol": "TCP"}],
            }
        )
    dns = {**_namespace(config.dns.namespace), "podSelector": {"matchLabels": dict(config.dns.pod_labels)}}
    egress: list[dict[str, Any]] = [
        {"to": [dns], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    ]
    egress += [
        {
            "to": [_peer(peer) for peer in rule.to],
            "ports": [{"port": port.port, "protocol": port.protocol} for port in rule.ports],
        }
        for rule in spec.network.egress
    ]
    return {
        "podSelector": {"matchLabels": naming.selector_labels(context.owner)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": ingress,
        "egress": egress,
    }


def network_policy(context: Context) -> Manifest:
    owner = context.owner
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": naming.metadata(owner, owner.child(PURPOSE), "network-policy"),
        "spec": policy_spec(context),
    }


def check(context: Context, policies: tuple[Manifest, ...]) -> ControlResult:
    own_name = context.owner.child(PURPOSE)
    own = next((policy for policy in policies if policy["metadata"]["name"] == own_name), None)
    if own is None:
        return ControlResult(NAME, "Fail", "PolicyMissing", f"NetworkPolicy {own_name} does not exist")
    if not carries(own.get("spec"), policy_spec(context)):
        return ControlResult(NAME, "Fail", "PolicyChanged", f"NetworkPolicy {own_name} differs from the spec")
    pod_labels = naming.selector_labels(context.owner)
    widening = sorted(
        policy["metadata"]["name"]
        for policy in policies
        if policy["metadata"]["name"] != own_name
        and selector_matches(policy["spec"].get("podSelector"), pod_labels)
        and (policy["spec"].get("ingress") or policy["spec"].get("egress"))
    )
    if widening:
        return ControlResult(
            NAME,
            "Fail",
            "ForeignPolicyAllowsMore",
            f"NetworkPolicies not managed by the operator allow more traffic to or from the model: "
            f"{', '.join(widening)}",
        )
    weakened = weakenings(context)
    if weakened:
        return ControlResult(
            NAME,
            "Weakened",
            ",".join(weakened),
            "; ".join(
                f"{_OPT_IN_FIELDS[item]} lets a peer select every namespace or address" for item in weakened
            ),
            weakened,
        )
    return ControlResult(
        NAME, "Pass", "DefaultDeny", "only declared ingress, DNS and declared egress allowed"
    )

"""Control `network-isolation`: the model's pods accept and open only the connections the spec declares.

One NetworkPolicy per SMD selects its pods for both directions, which denies everything by default;
its rules then allow the declared ingress peers (to the mTLS port only), cluster DNS, the declared egress
destinations and ports, and metrics scraping from the monitoring namespace. A compromised model then
cannot reach the rest of the cluster or the internet, and nothing undeclared can reach it.

Judged by what the policies do, not by what the operator wrote: the model's policy must select every
live pod of the model, admit ingress only to the TLS (and metrics) port, and name a port on every egress
rule, with no port ranges; and no other policy of the namespace may select a model pod with rules of its
own (policies add up, so any rule of theirs opens more). CIDR lists are judged by how many addresses they
cover together. Services that others made to select the model's pods are reported too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from securemodels.api.v1alpha1 import (
    BROADEST_IPV4_PREFIX,
    BROADEST_IPV6_PREFIX,
    TLS_PORT,
    LabelSelector,
    Peer,
)
from securemodels.desired import naming
from securemodels.desired.controls.base import verdict
from securemodels.desired.model import Blocker, Context, ControlResult, Manifest, Observed
from securemodels.desired.selectors import selector_matches

NAME = "network-isolation"
CONDITION = "NetworkIsolated"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS_FROM_ANYWHERE = "IngressFromAnywhere"
EGRESS_TO_ANYWHERE = "EgressToAnywhere"
_OPT_IN_FIELDS = {
    INGRESS_FROM_ANYWHERE: "spec.network.allowIngressFromAnywhere",
    EGRESS_TO_ANYWHERE: "spec.network.allowEgressToAnywhere",
}
# Together, a list of CIDRs may cover at most as many addresses as one /8 (IPv4) or /32 (IPv6).
MAX_IPV4_ADDRESSES = 1 << (32 - BROADEST_IPV4_PREFIX)
MAX_IPV6_ADDRESSES = 1 << (128 - BROADEST_IPV6_PREFIX)


class Reason(StrEnum):
    DEFAULT_DENY = "DefaultDeny"
    POLICY_MISSING = "PolicyMissing"
    POLICY_CHANGED = "PolicyChanged"
    FOREIGN_POLICY = "ForeignPolicyAllowsMore"
    INGRESS_FROM_ANYWHERE = INGRESS_FROM_ANYWHERE
    EGRESS_TO_ANYWHERE = EGRESS_TO_ANYWHERE
    TOO_BROAD = "NetworkTooBroad"
    QUARANTINED = "Quarantined"


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


def addresses_covered(cidrs: Iterable[str]) -> tuple[int, int]:
    """How many IPv4 and IPv6 addresses the blocks cover together (overlaps counted once)."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
    v4 = ipaddress.collapse_addresses(item for item in networks if isinstance(item, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(item for item in networks if isinstance(item, ipaddress.IPv6Network))
    return sum(item.num_addresses for item in v4), sum(item.num_addresses for item in v6)


def reaches_anywhere(peers: list[Peer]) -> bool:
    """Every pod in every namespace, or more addresses than one /8 of IPv4 or /32 of IPv6."""
    if any(peer.is_anywhere for peer in peers):
        return True
    v4, v6 = addresses_covered(peer.cidr for peer in peers if peer.cidr is not None)
    return v4 > MAX_IPV4_ADDRESSES or v6 > MAX_IPV6_ADDRESSES


def weakenings(context: Context) -> tuple[str, ...]:
    network = context.spec.network
    if context.spec.quarantine is not None:
        return ()  # the quarantine's policy admits nothing, whatever the spec opted in to
    found = []
    if reaches_anywhere([peer for rule in network.ingress for peer in rule.from_]):
        found.append(INGRESS_FROM_ANYWHERE)
    if reaches_anywhere([peer for rule in network.egress for peer in rule.to]):
        found.append(EGRESS_TO_ANYWHERE)
    return tuple(found)


def preflight(context: Context, observed: Observed) -> Blocker | None:
    """The CRD refuses single peers that reach anywhere; CIDRs that only together cover too much get
    past it and are refused here, unless the spec opts in."""
    network = context.spec.network
    opted_in = {
        INGRESS_FROM_ANYWHERE: network.allow_ingress_from_anywhere,
        EGRESS_TO_ANYWHERE: network.allow_egress_to_anywhere,
    }
    refused = [item for item in weakenings(context) if not opted_in[item]]
    if not refused:
        return None
    return Blocker(
        Reason.TOO_BROAD,
        "; ".join(
            f"{item} without {_OPT_IN_FIELDS[item]}: the declared peers together cover more than a "
            f"/{BROADEST_IPV4_PREFIX} of IPv4 or a /{BROADEST_IPV6_PREFIX} of IPv6"
            for item in refused
        ),
    )


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def policy_spec(context: Context) -> dict[str, Any]:
    spec, config = context.spec, context.config
    selector = {"matchLabels": naming.selector_labels(context.owner)}
    if spec.quarantine is not None:
        # No rule at all: nothing in, nothing out, not even DNS.
        return {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]}
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
        "podSelector": selector,
        "policyTypes": ["Ingress", "Egress"],
        "ingress": ingress,
        "egress": egress,
    }


def network_policy(context: Context) -> Manifest:
    owner = context.owner
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": naming.metadata(owner, context.names.network_policy, "network-policy"),
        "spec": policy_spec(context),
    }


def _pod_labels(pod: Manifest) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("labels") or {})


def policy_problems(context: Context, policy: Manifest, pods: tuple[Manifest, ...]) -> list[str]:
    """What the model's own live policy fails to do, judged by its effect."""
    spec = policy.get("spec") or {}
    name = policy["metadata"]["name"]
    problems = []
    if set(spec.get("policyTypes") or []) != {"Ingress", "Egress"}:
        problems.append(f"NetworkPolicy {name} does not isolate both directions")
    unselected = sorted(
        pod["metadata"]["name"]
        for pod in pods
        if not selector_matches(spec.get("podSelector"), _pod_labels(pod))
    )
    if unselected:
        problems.append(f"NetworkPolicy {name} does not select the model's pods {', '.join(unselected)}")
    if context.spec.quarantine is not None and (spec.get("ingress") or spec.get("egress")):
        problems.append(f"NetworkPolicy {name} still allows traffic during the quarantine")
    allowed_ports = {port for port in (TLS_PORT, context.spec.model.metrics_port) if port is not None}
    for rule in spec.get("ingress") or []:
        ports = rule.get("ports") or []
        if not ports or any(port.get("port") not in allowed_ports or "endPort" in port for port in ports):
            problems.append(f"NetworkPolicy {name} admits ingress to ports other than {TLS_PORT}")
            break
    for rule in spec.get("egress") or []:
        ports = rule.get("ports") or []
        if not ports or any("endPort" in port for port in ports):
            problems.append(f"NetworkPolicy {name} allows egress to a range of ports or to every port")
            break
    return problems


def selects_model(
    selector: dict[str, Any] | None, pods: tuple[Manifest, ...], template_labels: dict[str, str]
) -> bool:
    return selector_matches(selector, template_labels) or any(
        selector_matches(selector, _pod_labels(pod)) for pod in pods
    )


def check(context: Context, observed: Observed) -> ControlResult:
    ref = context.names.network_policy
    own = observed.get(ref)
    if own is None:
        return ControlResult(NAME, "Fail", Reason.POLICY_MISSING, f"NetworkPolicy {ref.name} does not exist")
    problems = list(observed.findings.get(NAME, ()))
    problems += policy_problems(context, own, observed.pods)
    template_labels = naming.labels(context.owner, "model")
    widening = sorted(
        policy["metadata"]["name"]
        for policy in observed.foreign_policies
        if selects_model((policy.get("spec") or {}).get("podSelector"), observed.pods, template_labels)
        and ((policy.get("spec") or {}).get("ingress") or (policy.get("spec") or {}).get("egress"))
    )
    if widening:
        problems.append(
            "NetworkPolicies not managed by the operator allow more traffic to or from the model: "
            + ", ".join(widening)
        )
    exposing = sorted(
        service["metadata"]["name"]
        for service in observed.foreign_services
        if (selector := (service.get("spec") or {}).get("selector"))
        and selects_model({"matchLabels": selector}, observed.pods, template_labels)
    )
    if exposing:
        problems.append(
            f"Services not managed by the operator select the model's pods: {', '.join(exposing)}"
        )
    if problems:
        reason = Reason.FOREIGN_POLICY if widening and len(problems) == 1 else Reason.POLICY_CHANGED
        return ControlResult(NAME, "Fail", reason, "; ".join(problems))
    weakened = weakenings(context)
    if weakened:
        return ControlResult(
            NAME,
            "Weakened",
            ",".join(weakened),
            "; ".join(
                f"{_OPT_IN_FIELDS[item]} lets a peer select every namespace or most addresses"
                for item in weakened
            ),
            weakened,
        )
    if context.spec.quarantine is not None:
        return ControlResult(
            NAME, "Pass", Reason.QUARANTINED, "quarantined: no traffic in or out, DNS included"
        )
    return verdict(
        NAME,
        [],
        Reason.POLICY_CHANGED,
        Reason.DEFAULT_DENY,
        "only declared ingress, DNS and declared egress allowed",
    )

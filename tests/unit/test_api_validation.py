"""Every validation rule of the API, through its Python twin: a spec that breaks the rule is refused with
the rule's own message, and a near miss that keeps it is accepted. A rule added without a case here
fails `test_every_rule_has_a_case`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from securemodels.api import v1alpha1
from securemodels.api.v1alpha1 import Rule, SecureModelDeploymentSpec
from unit.builders import IMAGE, REGISTRY, spec, spec_dict

DIGEST = IMAGE.partition("@")[2]
STORAGE = {"size": "1Gi", "storageClassName": "encrypted-gp3"}


def declared_rules() -> list[Rule]:
    """Every Rule of the module: each class's own RULES, and the field rules declared at module level."""
    found: list[Rule] = []
    for value in vars(v1alpha1).values():
        if isinstance(value, type) and issubclass(value, v1alpha1.ApiModel):
            found += value.__dict__.get("RULES", ())
        elif isinstance(value, Rule):
            found.append(value)
    return list(dict.fromkeys(found))


def rule(starting: str) -> Rule:
    """The one declared rule whose message starts with `starting`."""
    (found,) = [item for item in declared_rules() if item.message.startswith(starting)]
    return found


def refusal(data: dict[str, Any]) -> str:
    """What the operator says about a spec it refuses."""
    with pytest.raises(ValidationError) as caught:
        SecureModelDeploymentSpec.model_validate(data)
    return v1alpha1.describe(caught.value)


def egress_to(*cidrs: str) -> dict[str, Any]:
    return {"egress": [{"to": [{"cidr": cidr} for cidr in cidrs], "ports": [{"port": 443}]}]}


def from_config_maps(count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"V{index}", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": f"k{index}"}}}
        for index in range(count)
    ]


def client(name: str, namespace: str) -> dict[str, Any]:
    return {"clients": [{"name": name, "namespace": namespace}]}


@dataclass(frozen=True)
class Case:
    """A spec that breaks `rule`, and one as close to it as possible that keeps it."""

    name: str
    rule: Rule
    broken: dict[str, Any]
    kept: dict[str, Any]


ENV_XOR = rule("exactly one of value or valueFrom")
MODEL_PORT = rule("spec.model.port must not be")
METRICS_PORT = rule("spec.model.metricsPort must differ")
RESERVED_ENV = rule("spec.model.env: names starting with")
CONFIG_MAP_ENV = rule("spec.model.env: at most")
IMAGE_RULE = v1alpha1.IMAGE_RULE
CIDR_RULE = v1alpha1.CIDR_RULE
PEER_SET = rule("a peer must set")
PEER_ALONE = rule("cidr cannot be combined")
INGRESS_ANYWHERE = rule("spec.network.ingress admits every namespace")
EGRESS_ANYWHERE = rule("spec.network.egress reaches every namespace")
CLIENT_LENGTH = rule("name and namespace together")
DURATION = rule("spec.mtls.certificateDuration must be at least")
RENEW_BEFORE = rule("spec.mtls.renewBefore must leave")
SUBJECT_NAMESPACE = rule("namespace is required for a ServiceAccount")
VIEWERS_UNIQUE = rule("spec.access.viewers lists")
DEPLOYERS_UNIQUE = rule("spec.access.deployers lists")
MOUNT_PATH = rule("spec.storage.mountPath must not be")
VOLUME_REPLICAS = rule("spec.model.replicas must be 0 or 1")
REGISTRY_RULE = rule("spec.model.image is not from a registry")
SA = {"kind": "ServiceAccount", "name": "ci", "namespace": "ci"}
ALICE = {"kind": "User", "name": "alice"}

EXISTS_VALUE = rule("a toleration with operator Exists")
NODE_SELECTOR_KEYS = rule("spec.scheduling.nodeSelector: keys")
TOLERATION_SECONDS = rule("tolerationSeconds applies")
GRPC_HEALTH_PORT = rule("spec.serving.healthPort is required")
HEALTH_PORT = rule("spec.serving.healthPort must not be")
GRPC_HEALTH_PORT_DIFFERS = rule("spec.serving.healthPort must differ")
BODY_SIZE = rule("spec.serving.maxRequestBodySize must be between")
RESPONSE_TIMEOUT = rule("spec.serving.responseTimeout must be between")


def tolerating(**toleration: Any) -> dict[str, Any]:
    return {"scheduling": {"tolerations": [{"key": "nvidia.com/gpu", **toleration}]}}


REQUEST_NAMES = rule("spec.model.resources.requests: a resource is")
LIMIT_NAMES = rule("spec.model.resources.limits: a resource is")
CPU_AND_MEMORY = rule("spec.model.resources: requests and limits must both set")
NOT_ABOVE_LIMIT = rule("spec.model.resources: a request must not exceed")
NOT_OVERCOMMITTED = rule("spec.model.resources: an extended resource such as")
WHOLE_DEVICES = rule("spec.model.resources.limits: an extended resource counts")
STARTUP_TIMEOUT = rule("spec.model.startupTimeout must be between")
SHM_ABOVE_ZERO = rule("spec.model.sharedMemorySize must be above zero")
SHM_FITS = rule("spec.model.sharedMemorySize and the")
IN_VALUES = rule("a node selector requirement with operator In or NotIn")
EXISTS_NO_VALUES = rule("a node selector requirement with operator Exists")
GT_NUMBER = rule("a node selector requirement with operator Gt or Lt")
CPU_MEMORY = {"cpu": "1", "memory": "4Gi"}


def resources(requests: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """spec.model.resources with cpu and memory in both, and these extras."""
    return {
        "model": {"resources": {"requests": {**CPU_MEMORY, **requests}, "limits": {**CPU_MEMORY, **limits}}}
    }


def requiring(**requirement: Any) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": "nvidia.com/gpu.product", **requirement}]}
    return {
        "scheduling": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    }


def shared_memory(size: str, memory_limit: str = "8Gi") -> dict[str, Any]:
    return {
        "model": {
            "sharedMemorySize": size,
            "resources": {
                "requests": CPU_MEMORY,
                "limits": {"cpu": "1", "memory": memory_limit},
            },
        }
    }


ACCELERATOR_CASES = [
    Case(
        "a quota name in requests",
        REQUEST_NAMES,
        resources({"requests.nvidia.com/gpu": 1}, {"nvidia.com/gpu": 1}),
        resources({"nvidia.com/gpu": 1}, {"nvidia.com/gpu": 1}),
    ),
    Case(
        "hugepages in requests",
        REQUEST_NAMES,
        resources({"hugepages-2Mi": "1Gi"}, {}),
        resources({"nvidia.com/mig-1g.10gb": 1}, {"nvidia.com/mig-1g.10gb": 1}),
    ),
    Case(
        "ephemeral storage in limits",
        LIMIT_NAMES,
        resources({}, {"ephemeral-storage": "10Gi"}),
        resources({}, {"amd.com/gpu": 1}),
    ),
    Case(
        "a kubernetes.io name in limits",
        LIMIT_NAMES,
        resources({}, {"example.kubernetes.io/gpu": 1}),
        resources({}, {"example.com/gpu": 1}),
    ),
    Case(
        "an unprefixed name in limits",
        LIMIT_NAMES,
        resources({}, {"gpu": 1}),
        resources({}, {"vendor.example/gpu": 1}),
    ),
    Case(
        "a capitalised domain in limits",
        LIMIT_NAMES,
        resources({}, {"NVIDIA.com/gpu": 1}),
        resources({}, {"nvidia.com/GPU": 1}),
    ),
    Case(
        "no memory request",
        CPU_AND_MEMORY,
        {"model": {"resources": {"requests": {"cpu": "1"}, "limits": CPU_MEMORY}}},
        {"model": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}},
    ),
    Case(
        "a zero memory limit",
        CPU_AND_MEMORY,
        {
            "model": {
                "resources": {"requests": {"cpu": "0", "memory": "0"}, "limits": {"cpu": 1, "memory": 0}}
            }
        },
        {
            "model": {
                "resources": {"requests": {"cpu": "0", "memory": "0"}, "limits": {"cpu": 1, "memory": 1}}
            }
        },
    ),
    Case(
        "a cpu request above its limit",
        NOT_ABOVE_LIMIT,
        {
            "model": {
                "resources": {
                    "requests": {"cpu": "2001m", "memory": "1Gi"},
                    "limits": {"cpu": 2, "memory": "1Gi"},
                }
            }
        },
        {
            "model": {
                "resources": {
                    "requests": {"cpu": "2000m", "memory": "1Gi"},
                    "limits": {"cpu": 2, "memory": "1Gi"},
                }
            }
        },
    ),
    Case(
        "a memory request above its limit in other units",
        NOT_ABOVE_LIMIT,
        {
            "model": {
                "resources": {
                    "requests": {"cpu": 1, "memory": "1025Mi"},
                    "limits": {"cpu": 1, "memory": "1Gi"},
                }
            }
        },
        {
            "model": {
                "resources": {
                    "requests": {"cpu": 1, "memory": "1024Mi"},
                    "limits": {"cpu": 1, "memory": "1Gi"},
                }
            }
        },
    ),
    Case(
        "a GPU request below its limit",
        NOT_OVERCOMMITTED,
        resources({"nvidia.com/gpu": 1}, {"nvidia.com/gpu": 2}),
        resources({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": 2}),
    ),
    Case(
        "a GPU request without a limit",
        NOT_OVERCOMMITTED,
        resources({"nvidia.com/gpu": 1}, {}),
        resources({}, {"nvidia.com/gpu": 1}),
    ),
    Case(
        "half a GPU",
        WHOLE_DEVICES,
        resources({"nvidia.com/gpu": "500m"}, {"nvidia.com/gpu": "0.5"}),
        resources({"nvidia.com/gpu": "1000m"}, {"nvidia.com/gpu": "1"}),
    ),
    Case(
        "a startup budget under 30s",
        STARTUP_TIMEOUT,
        {"model": {"startupTimeout": "29s"}},
        {"model": {"startupTimeout": "30s"}},
    ),
    Case(
        "a startup budget over 4h",
        STARTUP_TIMEOUT,
        {"model": {"startupTimeout": "4h1s"}},
        {"model": {"startupTimeout": "3h59m60s"}},
    ),
    Case(
        "the model volume over /dev",
        MOUNT_PATH,
        {"storage": {**STORAGE, "mountPath": "/dev"}},
        {"storage": {**STORAGE, "mountPath": "/devices"}},
    ),
    Case("an empty /dev/shm", SHM_ABOVE_ZERO, shared_memory("0"), shared_memory("1Mi")),
    Case(
        "a /dev/shm that leaves no room for /tmp",
        SHM_FITS,
        shared_memory("7937Mi"),
        shared_memory("7936Mi"),
    ),
    Case(
        "a /dev/shm above the memory limit",
        SHM_FITS,
        shared_memory("16Gi", "8Gi"),
        shared_memory("16Gi", "17Gi"),
    ),
    Case("In without values", IN_VALUES, requiring(operator="In"), requiring(operator="In", values=["A100"])),
    Case(
        "NotIn with an empty list",
        IN_VALUES,
        requiring(operator="NotIn", values=[]),
        requiring(operator="NotIn", values=["T4"]),
    ),
    Case(
        "Exists with values",
        EXISTS_NO_VALUES,
        requiring(operator="Exists", values=["A100"]),
        requiring(operator="Exists"),
    ),
    Case(
        "Gt with a word",
        GT_NUMBER,
        requiring(operator="Gt", values=["many"]),
        requiring(operator="Gt", values=["79"]),
    ),
    Case(
        "Lt with two numbers",
        GT_NUMBER,
        requiring(operator="Lt", values=["1", "2"]),
        requiring(operator="Lt", values=["2"]),
    ),
]

CASES = [
    *ACCELERATOR_CASES,
    Case(
        "gRPC without an HTTP health port",
        GRPC_HEALTH_PORT,
        {"serving": {"protocol": "GRPC"}},
        {"serving": {"protocol": "GRPC", "healthPort": 8000}},
    ),
    Case(
        "health port on the sidecar's TLS port",
        HEALTH_PORT,
        {"serving": {"healthPort": 8443}},
        {"serving": {"healthPort": 8000}},
    ),
    Case(
        "health port on the sidecar's health port",
        HEALTH_PORT,
        {"serving": {"healthPort": 8081}},
        {"serving": {"healthPort": 8082}},
    ),
    Case(
        "gRPC health on the gRPC port",
        GRPC_HEALTH_PORT_DIFFERS,
        {"model": {"port": 8001}, "serving": {"protocol": "GRPC", "healthPort": 8001}},
        {"model": {"port": 8001}, "serving": {"protocol": "GRPC", "healthPort": 8000}},
    ),
    Case(
        "request body limit under 1Ki",
        BODY_SIZE,
        {"serving": {"maxRequestBodySize": "1023"}},
        {"serving": {"maxRequestBodySize": "1024"}},
    ),
    Case(
        "request body limit over 4Gi",
        BODY_SIZE,
        {"serving": {"maxRequestBodySize": "4097Mi"}},
        {"serving": {"maxRequestBodySize": "4Gi"}},
    ),
    Case(
        "response timeout under a second",
        RESPONSE_TIMEOUT,
        {"serving": {"responseTimeout": "0s"}},
        {"serving": {"responseTimeout": "1s"}},
    ),
    Case(
        "response timeout over an hour",
        RESPONSE_TIMEOUT,
        {"serving": {"responseTimeout": "60m1s"}},
        {"serving": {"responseTimeout": "1h"}},
    ),
    Case(
        "node selector key that is no label key",
        NODE_SELECTOR_KEYS,
        {"scheduling": {"nodeSelector": {"gpu type": "a100"}}},
        {"scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "A100"}}},
    ),
    Case(
        "toleration Exists with a value",
        EXISTS_VALUE,
        tolerating(operator="Exists", value="true"),
        tolerating(operator="Exists"),
    ),
    Case(
        "tolerationSeconds without NoExecute",
        TOLERATION_SECONDS,
        tolerating(effect="NoSchedule", tolerationSeconds=30),
        tolerating(effect="NoExecute", tolerationSeconds=30),
    ),
    Case(
        "env with neither value",
        ENV_XOR,
        {"model": {"env": [{"name": "A"}]}},
        {"model": {"env": [{"name": "A", "value": ""}]}},
    ),
    Case(
        "env with both values",
        ENV_XOR,
        {
            "model": {
                "env": [
                    {"name": "A", "value": "1", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
                ]
            }
        },
        {"model": {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}},
    ),
    Case("model on the TLS port", MODEL_PORT, {"model": {"port": 8443}}, {"model": {"port": 8444}}),
    Case("model on the health port", MODEL_PORT, {"model": {"port": 8081}}, {"model": {"port": 8082}}),
    Case(
        "metrics on the model port",
        METRICS_PORT,
        {"model": {"port": 9000, "metricsPort": 9000}},
        {"model": {"port": 9000, "metricsPort": 9001}},
    ),
    Case(
        "metrics on the TLS port",
        METRICS_PORT,
        {"model": {"metricsPort": 8443}},
        {"model": {"metricsPort": 9090}},
    ),
    Case(
        "metrics on the health port",
        METRICS_PORT,
        {"model": {"metricsPort": 8081}},
        {"model": {"metricsPort": 9091}},
    ),
    Case(
        "reserved env prefix",
        RESERVED_ENV,
        {"model": {"env": [{"name": "SECUREMODELS_PORT", "value": "1"}]}},
        {"model": {"env": [{"name": "SECUREMODEL_PORT", "value": "1"}]}},
    ),
    Case(
        "reserved env prefix anywhere in the list",
        RESERVED_ENV,
        {"model": {"env": [{"name": "A", "value": "1"}, {"name": "SECUREMODELS_", "value": "1"}]}},
        {"model": {"env": [{"name": "A", "value": "1"}, {"name": "X_SECUREMODELS_", "value": "1"}]}},
    ),
    Case(
        "too many variables from ConfigMaps",
        CONFIG_MAP_ENV,
        {"model": {"env": from_config_maps(v1alpha1.MAX_CONFIG_MAP_ENV + 1)}},
        {
            "model": {
                "env": [*from_config_maps(v1alpha1.MAX_CONFIG_MAP_ENV), {"name": "LITERAL", "value": "1"}]
            }
        },
    ),
    Case(
        "image by tag",
        IMAGE_RULE,
        {"model": {"image": f"{REGISTRY}/ml/fraud:1.4.2"}},
        {"model": {"image": f"{REGISTRY}/ml/fraud:1.4.2@{DIGEST}"}},
    ),
    Case(
        "image with a short digest",
        IMAGE_RULE,
        {"model": {"image": f"{REGISTRY}/ml/fraud@{DIGEST[:-1]}"}},
        {"model": {"image": f"{REGISTRY}/ml/fraud@{DIGEST}"}},
    ),
    Case(
        "cidr with host bits",
        CIDR_RULE,
        {"network": egress_to("10.0.0.1/8")},
        {"network": egress_to("10.0.0.0/8")},
    ),
    Case(
        "cidr without a prefix",
        CIDR_RULE,
        {"network": egress_to("10.1.2.3")},
        {"network": egress_to("10.1.2.3/32")},
    ),
    Case(
        "IPv6 cidr not in canonical form",
        CIDR_RULE,
        {"network": egress_to("2001:0db8::/32")},
        {"network": egress_to("2001:db8::/32")},
    ),
    Case(
        "peer that selects nothing",
        PEER_SET,
        {"network": {"ingress": [{"from": [{}]}]}},
        {"network": {"ingress": [{"from": [{"podSelector": {}}]}]}},
    ),
    Case(
        "cidr with a pod selector",
        PEER_ALONE,
        {"network": {"ingress": [{"from": [{"cidr": "10.0.0.0/8", "podSelector": {}}]}]}},
        {"network": {"ingress": [{"from": [{"cidr": "10.0.0.0/8"}]}]}},
    ),
    Case(
        "cidr with a namespace selector",
        PEER_ALONE,
        {"network": {"ingress": [{"from": [{"cidr": "10.0.0.0/8", "namespaceSelector": {}}]}]}},
        {"network": {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "gw"}}}]}]}},
    ),
    Case(
        "ingress from every namespace",
        INGRESS_ANYWHERE,
        {"network": {"ingress": [{"from": [{"namespaceSelector": {}}]}]}},
        {"network": {"ingress": [{"from": [{"namespaceSelector": {}}]}], "allowIngressFromAnywhere": True}},
    ),
    Case(
        "ingress from namespaces selected by Exists only",
        INGRESS_ANYWHERE,
        {
            "network": {
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "kubernetes.io/metadata.name", "operator": "Exists"}
                                    ]
                                }
                            }
                        ]
                    }
                ]
            }
        },
        {
            "network": {
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/metadata.name",
                                            "operator": "In",
                                            "values": ["gw"],
                                        }
                                    ]
                                }
                            }
                        ]
                    }
                ]
            }
        },
    ),
    Case(
        "ingress from every pod of every namespace",
        INGRESS_ANYWHERE,
        {"network": {"ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {}}]}]}},
        {
            "network": {
                "ingress": [
                    {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "gw"}}}]}
                ]
            }
        },
    ),
    Case(
        "ingress from a /7",
        INGRESS_ANYWHERE,
        {"network": {"ingress": [{"from": [{"cidr": "10.0.0.0/7"}]}]}},
        {"network": {"ingress": [{"from": [{"cidr": "10.0.0.0/8"}]}]}},
    ),
    Case(
        "egress to every IPv4 address",
        EGRESS_ANYWHERE,
        {"network": egress_to("0.0.0.0/0")},
        {"network": {**egress_to("0.0.0.0/0"), "allowEgressToAnywhere": True}},
    ),
    Case(
        "egress to a /7",
        EGRESS_ANYWHERE,
        {"network": egress_to("10.0.0.0/7")},
        {"network": egress_to("10.0.0.0/8")},
    ),
    Case(
        "egress to an IPv6 /31",
        EGRESS_ANYWHERE,
        {"network": egress_to("2001:db8::/31")},
        {"network": egress_to("2001:db8::/32")},
    ),
    Case(
        "client identity of 64 characters",
        CLIENT_LENGTH,
        {"mtls": client("c" * 32, "n" * 32)},
        {"mtls": client("c" * 31, "n" * 32)},
    ),
    Case(
        "certificates shorter than an hour",
        DURATION,
        {"mtls": {"certificateDuration": "59m59s"}},
        {"mtls": {"certificateDuration": "60m"}},
    ),
    Case(
        "renewal leaves less than 30m",
        RENEW_BEFORE,
        {"mtls": {"certificateDuration": "1h", "renewBefore": "31m"}},
        {"mtls": {"certificateDuration": "1h", "renewBefore": "30m"}},
    ),
    Case(
        "renewal after expiry",
        RENEW_BEFORE,
        {"mtls": {"certificateDuration": "2h", "renewBefore": "3h"}},
        {"mtls": {"certificateDuration": "2h", "renewBefore": "1h30m"}},
    ),
    Case(
        "service account without a namespace",
        SUBJECT_NAMESPACE,
        {"access": {"viewers": [{"kind": "ServiceAccount", "name": "ci"}]}},
        {"access": {"viewers": [SA]}},
    ),
    Case(
        "user with a namespace",
        SUBJECT_NAMESPACE,
        {"access": {"deployers": [{**ALICE, "namespace": "ci"}]}},
        {"access": {"deployers": [ALICE]}},
    ),
    Case(
        "a viewer twice",
        VIEWERS_UNIQUE,
        {"access": {"viewers": [SA, SA]}},
        {"access": {"viewers": [SA, {**SA, "namespace": "cd"}]}},
    ),
    Case(
        "a deployer twice",
        DEPLOYERS_UNIQUE,
        {"access": {"deployers": [ALICE, ALICE]}},
        {"access": {"deployers": [ALICE, {"kind": "Group", "name": "alice"}]}},
    ),
    Case(
        "volume over the scratch directory",
        MOUNT_PATH,
        {"storage": {**STORAGE, "mountPath": "/tmp"}},
        {"storage": {**STORAGE, "mountPath": "/tmpfiles"}},
    ),
    Case(
        "volume above the Secret files",
        MOUNT_PATH,
        {"storage": {**STORAGE, "mountPath": "/var/run/secrets"}},
        {"storage": {**STORAGE, "mountPath": "/var/run/secret"}},
    ),
    Case(
        "two replicas on one volume",
        VOLUME_REPLICAS,
        {"storage": STORAGE, "model": {"replicas": 2}},
        {"storage": STORAGE, "model": {"replicas": 1}},
    ),
    Case(
        "image from another registry",
        REGISTRY_RULE,
        {"imagePolicy": {"allowedRegistries": ["quay.io"]}},
        {"imagePolicy": {"allowedRegistries": ["quay.io", REGISTRY]}},
    ),
    Case(
        "image from a look-alike registry",
        REGISTRY_RULE,
        {"imagePolicy": {"allowedRegistries": ["registry.example"]}},
        {"imagePolicy": {"allowedRegistries": [f"{REGISTRY}/ml"]}},
    ),
]
WEIGHTS_IMAGE = f"{REGISTRY}/ml/weights@{DIGEST}"
KEY = {"name": "signing-key", "key": "key.pub"}
WEIGHTS = {"image": WEIGHTS_IMAGE}
CASES += [
    Case(
        "weights image by tag",
        v1alpha1.WEIGHTS_IMAGE_RULE,
        {"model": {"weights": {"image": f"{REGISTRY}/ml/weights:1.0"}}},
        {"model": {"weights": {"image": f"{REGISTRY}/ml/weights:1.0@{DIGEST}"}}},
    ),
    Case(
        "weights from an image and the volume",
        rule("spec.model.weights: exactly one of image or storagePath"),
        {"storage": STORAGE, "model": {"weights": {**WEIGHTS, "storagePath": "llama"}}},
        {"storage": STORAGE, "model": {"weights": {"storagePath": "llama"}}},
    ),
    Case(
        "weights from nowhere",
        rule("spec.model.weights: exactly one of image or storagePath"),
        {"model": {"weights": {"mountPath": "/weights"}}},
        {"model": {"weights": {**WEIGHTS, "mountPath": "/weights"}}},
    ),
    Case(
        "weights over the scratch directory",
        rule("spec.model.weights.mountPath must not be"),
        {"model": {"weights": {**WEIGHTS, "mountPath": "/tmp/weights"}}},
        {"model": {"weights": {**WEIGHTS, "mountPath": "/tmpweights"}}},
    ),
    Case(
        "weights above the signing key",
        rule("spec.model.weights.mountPath must not be"),
        {"model": {"weights": {**WEIGHTS, "mountPath": "/var/run/securemodels"}}},
        {"model": {"weights": {**WEIGHTS, "mountPath": "/var/run/models"}}},
    ),
    Case(
        "signature with a key and a chain",
        rule("spec.model.weights.signature: exactly one of"),
        {"model": {"weights": {**WEIGHTS, "signature": {"publicKey": KEY, "certificateChain": KEY}}}},
        {"model": {"weights": {**WEIGHTS, "signature": {"certificateChain": KEY}}}},
    ),
    Case(
        "signature with neither key nor chain",
        rule("spec.model.weights.signature: exactly one of"),
        {"model": {"weights": {**WEIGHTS, "signature": {"path": "model.sig"}}}},
        {"model": {"weights": {**WEIGHTS, "signature": {"path": "model.sig", "publicKey": KEY}}}},
    ),
    Case(
        "weights image from another registry",
        rule("spec.model.weights.image is not from a registry"),
        {
            "imagePolicy": {"allowedRegistries": [REGISTRY]},
            "model": {"weights": {"image": f"quay.io/w@{DIGEST}"}},
        },
        {
            "imagePolicy": {"allowedRegistries": [REGISTRY, "quay.io"]},
            "model": {"weights": {"image": f"quay.io/w@{DIGEST}"}},
        },
    ),
    Case(
        "weights on a volume that is not there",
        rule("spec.model.weights.storagePath needs spec.storage"),
        {"model": {"weights": {"storagePath": "llama"}}},
        {"storage": STORAGE, "model": {"weights": {"storagePath": "llama"}}},
    ),
    Case(
        "weights where the volume is",
        rule("spec.model.weights.mountPath must differ"),
        {"storage": STORAGE, "model": {"weights": {"storagePath": "llama", "mountPath": "/models"}}},
        {"storage": STORAGE, "model": {"weights": {"storagePath": "llama", "mountPath": "/models/llama"}}},
    ),
]
# metadata.name is checked on the object, not the spec: names that break and keep its rule.
NAME_CASES = [
    ("starts with a digit", "1fraud", "f1raud"),
    ("capitals", "Fraud", "fraud"),
    ("ends with a dash", "fraud-", "fraud-1"),
    ("dots", "fraud.v2", "fraud-v2"),
    ("one character too long", "m" * (v1alpha1.MAX_NAME_LENGTH + 1), "m" * v1alpha1.MAX_NAME_LENGTH),
]


def test_every_rule_has_a_case() -> None:
    covered = [case.rule for case in CASES] + [v1alpha1.NAME_RULE]

    assert [item.message for item in declared_rules() if item not in covered] == []


def test_the_rule_list_finds_rules_of_classes_and_fields() -> None:
    rules = declared_rules()

    assert v1alpha1.NAME_RULE in rules
    assert v1alpha1.IMAGE_RULE in rules
    assert v1alpha1.CIDR_RULE in rules
    assert set(v1alpha1.Access.RULES) <= set(rules)
    assert set(v1alpha1.ModelSpec.RULES) <= set(rules)
    assert len(rules) == len(set(rules))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_spec_that_breaks_a_rule_is_refused_with_its_message(case: Case) -> None:
    assert case.rule.message in refusal(spec_dict(**case.broken))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_near_miss_keeps_the_rule_and_is_accepted(case: Case) -> None:
    SecureModelDeploymentSpec.model_validate(spec_dict(**case.kept))


@pytest.mark.parametrize(("broken", "kept"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES])
def test_metadata_name_must_be_a_short_dns_label_starting_with_a_letter(broken: str, kept: str) -> None:
    assert v1alpha1.name_problem(broken) == v1alpha1.NAME_RULE.message
    assert not v1alpha1.NAME_RULE.holds(broken)
    assert v1alpha1.name_problem(kept) is None
    assert v1alpha1.NAME_RULE.holds(kept)


@pytest.mark.parametrize("name", [None, 7, ""], ids=["absent", "a number", "empty"])
def test_a_name_that_is_not_a_string_breaks_the_name_rule(name: object) -> None:
    assert v1alpha1.name_problem(name) == v1alpha1.NAME_RULE.message


def test_every_rule_is_entered_with_its_message_and_field_path() -> None:
    assert MODEL_PORT.entry() == {"rule": MODEL_PORT.cel, "message": MODEL_PORT.message, "fieldPath": ".port"}
    assert ENV_XOR.entry() == {"rule": ENV_XOR.cel, "message": ENV_XOR.message}


def test_several_broken_rules_are_all_named() -> None:
    message = refusal(spec_dict(model={"port": 8443, "metricsPort": 8443}))

    assert MODEL_PORT.message in message
    assert METRICS_PORT.message in message


UNIQUE: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "env names",
        {"model": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        {"model": {"env": [{"name": "A", "value": "1"}, {"name": "a", "value": "2"}]}},
        "spec.model.env: names must be unique",
    ),
    (
        "secret file names",
        {"model": {"secretFiles": [{"name": "x", "secretName": "a"}, {"name": "x", "secretName": "b"}]}},
        {"model": {"secretFiles": [{"name": "x", "secretName": "a"}, {"name": "y", "secretName": "a"}]}},
        "spec.model.secretFiles: names must be unique",
    ),
    (
        "clients",
        {"mtls": {"clients": [{"name": "gw", "namespace": "a"}, {"name": "gw", "namespace": "a"}]}},
        {"mtls": {"clients": [{"name": "gw", "namespace": "a"}, {"name": "gw", "namespace": "b"}]}},
        "spec.mtls.clients: each name and namespace may appear once",
    ),
    (
        "registries",
        {"imagePolicy": {"allowedRegistries": [REGISTRY, REGISTRY]}},
        {"imagePolicy": {"allowedRegistries": [REGISTRY, f"{REGISTRY}/ml"]}},
        "spec.imagePolicy.allowedRegistries: entries must be unique",
    ),
    (
        "regions",
        {"residency": {"regions": ["eu-west-1", "eu-west-1"]}},
        {"residency": {"regions": ["eu-west-1", "eu-west-2"]}},
        "spec.residency.regions: entries must be unique",
    ),
    (
        "viewers",
        {"access": {"viewers": [ALICE, ALICE]}},
        {"access": {"viewers": [ALICE, {"kind": "User", "name": "bob"}]}},
        "spec.access.viewers lists a subject twice",
    ),
]


@pytest.mark.parametrize(("broken", "kept", "message"), [c[1:] for c in UNIQUE], ids=[c[0] for c in UNIQUE])
def test_lists_refuse_duplicates(broken: dict[str, Any], kept: dict[str, Any], message: str) -> None:
    assert message in refusal(spec_dict(**broken))
    SecureModelDeploymentSpec.model_validate(spec_dict(**kept))


MOUNT_PATHS = [
    ("/tmp", True),
    ("/tmp/models", True),
    ("/var/run/secrets/securemodels", True),
    ("/var/run/secrets/securemodels/x", True),
    ("/var/run/secrets", True),
    ("/var/run", True),
    ("/var", True),
    ("/tmpfs", False),
    ("/models", False),
    ("/var/run/secrets/other", False),
    ("/var/run/secrets/securemodels2", False),
    ("/dev/shm", True),
    ("/dev", True),
    ("/dev/shm/models", True),
    ("/devices", False),
    ("/var/lib/models", False),
]


@pytest.mark.parametrize(("path", "reserved"), MOUNT_PATHS)
def test_the_volume_may_not_be_mounted_over_or_above_the_operators_directories(
    path: str, reserved: bool
) -> None:
    data = spec_dict(storage={**STORAGE, "mountPath": path})

    assert v1alpha1.mount_path_reserved(path) is reserved
    if reserved:
        assert MOUNT_PATH.message in refusal(data)
    else:
        assert spec(storage={**STORAGE, "mountPath": path}).storage is not None


@pytest.mark.parametrize("path", ["/models/", "models", "/models//a", "/models/../etc", "/./models"])
def test_mount_paths_are_plain_absolute_paths(path: str) -> None:
    assert "spec.storage.mountPath" in refusal(spec_dict(storage={**STORAGE, "mountPath": path}))


CIDR_BREADTH = [
    ("IPv4 /7", "10.0.0.0/7", True),
    ("IPv4 /8", "10.0.0.0/8", False),
    ("IPv4 /0", "0.0.0.0/0", True),
    ("IPv4 /32", "10.1.2.3/32", False),
    ("IPv6 /31", "2001:db8::/31", True),
    ("IPv6 /32", "2001:db8::/32", False),
    ("IPv6 /0", "::/0", True),
    ("IPv6 /128", "2001:db8::1/128", False),
]


@pytest.mark.parametrize(("cidr", "broad"), [c[1:] for c in CIDR_BREADTH], ids=[c[0] for c in CIDR_BREADTH])
def test_a_single_cidr_broader_than_a_slash_8_or_32_is_refused(cidr: str, broad: bool) -> None:
    assert v1alpha1.cidr_is_broad(cidr) is broad
    if broad:
        assert EGRESS_ANYWHERE.message in refusal(spec_dict(network=egress_to(cidr)))
    else:
        assert spec(network=egress_to(cidr)).network.egress[0].to[0].cidr == cidr


@pytest.mark.parametrize(
    ("cidr", "canonical"),
    [
        ("10.0.0.0/16", True),
        ("10.0.0.0/15", True),
        ("10.1.0.0/15", False),
        ("192.168.1.1/24", False),
        ("192.168.1.1", False),
        ("2001:db8::/64", True),
        ("2001:DB8::/64", False),
        ("2001:db8::1/64", False),
        ("not-a-cidr", False),
        ("10.0.0.0/33", False),
    ],
)
def test_a_cidr_must_be_in_canonical_form(cidr: str, canonical: bool) -> None:
    assert CIDR_RULE.holds(cidr) is canonical


def test_the_volume_claim_is_retained_by_default() -> None:
    policy = spec().persistent_volume_claim_retention_policy

    assert (policy.when_deleted, policy.when_storage_removed) == ("Retain", "Retain")


@pytest.mark.parametrize(
    "policy",
    [{"whenDeleted": "Delete"}, {"whenStorageRemoved": "Delete"}],
    ids=["when deleted", "when storage removed"],
)
def test_the_volume_claim_may_be_deleted_on_request(policy: dict[str, str]) -> None:
    parsed = spec(persistentVolumeClaimRetentionPolicy=policy).persistent_volume_claim_retention_policy

    assert "Delete" in (parsed.when_deleted, parsed.when_storage_removed)
    assert "Retain" in (parsed.when_deleted, parsed.when_storage_removed)


def test_a_retention_choice_other_than_retain_or_delete_is_refused() -> None:
    message = refusal(spec_dict(persistentVolumeClaimRetentionPolicy={"whenDeleted": "Archive"}))

    assert "spec.persistentVolumeClaimRetentionPolicy.whenDeleted" in message


def test_describe_names_each_problem_by_its_field_path() -> None:
    message = refusal(spec_dict(model={"port": 0, "env": [{"name": "1X", "value": "v"}]}))

    assert message.startswith("spec.model.port: ")
    assert "; spec.model.env.0.name: " in message


def test_describe_takes_another_prefix() -> None:
    with pytest.raises(ValidationError) as caught:
        v1alpha1.ModelSpec.model_validate({"image": "x:1"})

    assert v1alpha1.describe(caught.value, prefix="spec.model") == IMAGE_RULE.message

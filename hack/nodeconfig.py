"""The real node's configuration files and the cluster objects it needs, as data.

Pure: each function returns text or manifests from paths and addresses; realnode.py writes and applies
them. Kept apart from the process handling so each setting can be read (and reviewed) in one place.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

NODE_NAME = "securemodels-real-node"
NODE_NETWORK = ipaddress.ip_network("10.250.0.0/24")
NODE_IP = "10.250.0.1"
POD_RANGE = ("10.250.0.16", "10.250.0.254")
BRIDGE = "smo0"
CNI_NETWORK = "securemodels-pods"
CNI_BIN_DIR = Path("/usr/lib/cni")
CLUSTER_DOMAIN = "cluster.local"
DNS_SERVICE_IP = "10.96.0.10"
CGROUP_PARENT = "securemodels-node"
# The node's taint, its label, and the namespace label whose pods are placed on the node.
PLACEMENT_KEY = "securemodels.io/real-node"
TAINT = {"key": PLACEMENT_KEY, "value": "true", "effect": "NoSchedule"}
HOSTNAME_LABEL = "kubernetes.io/hostname"
# The operator labels its models' pods so; placement_policy leaves them alone (model_scheduling).
MODEL_PODS_LABEL = ("app.kubernetes.io/managed-by", "secure-model-operator")
COREDNS_IMAGE = "coredns"


def containerd_config(root: Path, cni_conf_dir: Path, runc: Path, sandbox_image: str) -> str:
    """containerd 2 (config version 3), everything under `root`.

    restrict_oom_score_adj: the host withholds CAP_SYS_RESOURCE, so runc may not lower a container's
    OOM score below containerd's own. Network namespaces live under the state directory, so cleanup finds
    them with the other mounts. NRI and the /opt plugin are off: they would create directories outside.
    """
    return f"""\
version = 3
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]

[plugins."io.containerd.server.v1.grpc"]
  address = "{root / "containerd.sock"}"
[plugins."io.containerd.server.v1.ttrpc"]
  address = "{root / "containerd.sock.ttrpc"}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "{runc}"
      Root = "{root / "runc"}"
      SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{cni_conf_dir}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """Pods on our bridge, the node's address as their gateway; no masquerading, since nothing they
    may reach is off the host. portmap serves hostPort, should a pod ask for one."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": str(NODE_NETWORK),
                                "rangeStart": POD_RANGE[0],
                                "rangeEnd": POD_RANGE[1],
                                "gateway": NODE_IP,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    socket: Path, ca_file: Path, cert: Path, key: Path, healthz_port: int, pod_logs: Path
) -> dict[str, Any]:
    """failCgroupV1 false: this host has cgroup v1, which the kubelet refuses by default since 1.35.
    Pods get cluster DNS only: an empty resolvConf keeps the host's resolvers out of them."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_PARENT}",
        "containerRuntimeEndpoint": f"unix://{socket}",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "podLogsDir": str(pod_logs),
        "registerWithTaints": [TAINT],
        "failSwapOn": False,
        # The host's disk is shared and may be fuller than the defaults allow; nothing is evicted here.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "syncFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """iptables mode. Conntrack limits and timeouts stay as the host has them, NodePorts open on the node
    address only, and route_localnet stays off (no NodePorts on localhost)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": str(NODE_NETWORK),
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def model_scheduling() -> dict[str, Any]:
    """An SMD's spec.scheduling that puts its pods on the real node: the node's toleration and name.

    The operator's models are placed by their own SMD, never by admission: the operator judges every pod
    of a model against the pod spec it stamped on the template, so a pod changed at admission fails the
    pod-security control.
    """
    return {
        "nodeSelector": {HOSTNAME_LABEL: NODE_NAME},
        "tolerations": [{**TAINT, "operator": "Equal"}],
    }


def placement_policy() -> list[dict[str, Any]]:
    """Pods in namespaces labelled PLACEMENT_KEY=true, other than the operator's models, tolerate the
    node's taint and run on it.

    A MutatingAdmissionPolicy (GA in 1.36), so the tests' own pods (clients, probes, the operator the
    chart installs) need no placement of their own. The operator's model pods are never mutated (the
    object selector): they get the same placement from their SMD (model_scheduling). Other pods never
    land on the node.
    """
    toleration = (
        f"Object.spec.tolerations{{key: '{PLACEMENT_KEY}', operator: 'Equal', value: 'true', "
        "effect: 'NoSchedule'}"
    )
    escaped = HOSTNAME_LABEL.replace("/", "~1")  # JSON Pointer's escape for "/"
    expression = (
        "[has(object.spec.nodeSelector) ? "
        f"JSONPatch{{op: 'add', path: '/spec/nodeSelector/{escaped}', value: '{NODE_NAME}'}} : "
        f"JSONPatch{{op: 'add', path: '/spec/nodeSelector', value: {{'{HOSTNAME_LABEL}': '{NODE_NAME}'}}}}, "
        "has(object.spec.tolerations) ? "
        f"JSONPatch{{op: 'add', path: '/spec/tolerations/-', value: {toleration}}} : "
        f"JSONPatch{{op: 'add', path: '/spec/tolerations', value: [{toleration}]}}]"
    )
    name = "securemodels-real-node-placement"
    label, value = MODEL_PODS_LABEL
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {PLACEMENT_KEY: "true"}},
                    "objectSelector": {
                        "matchExpressions": [{"key": label, "operator": "NotIn", "values": [value]}]
                    },
                },
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": expression}}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name},
        },
    ]


COREFILE = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def coredns_manifests(image: str) -> list[dict[str, Any]]:
    """Cluster DNS as pods on the real node, labelled as the operator's DNS rule expects (namespace
    kube-system, k8s-app=kube-dns). It answers for the cluster domain only: with no forwarder, no
    query ever leaves the host. Non-root on port 53 through the namespaced unprivileged-port sysctl."""
    labels = {"k8s-app": "kube-dns"}
    metadata = {"name": "coredns", "namespace": "kube-system"}
    rules = [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "securemodels:coredns"},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "securemodels:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "securemodels:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**metadata, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "nodeSelector": {HOSTNAME_LABEL: NODE_NAME},
                        "tolerations": [{**TAINT, "operator": "Equal"}],
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]

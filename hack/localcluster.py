"""A throwaway Kubernetes control plane on loopback, for the tests and the demo.

kind needs a container engine; this starts the real components as plain processes instead:
etcd, kube-apiserver (RBAC, Pod Security admission, service-account token signing),
kube-controller-manager (garbage collection, Deployments, ReplicaSets), kube-scheduler, and kwok
standing in for kubelets so that Pods on its fake nodes become Running and Ready.

With `real_node=True` (Linux, root) a real node joins beside the fake ones (realnode.py): containerd,
kubelet, kube-proxy, a NetworkPolicy enforcer and cluster DNS, so pods placed there really run. The API
server then listens on that node's bridge instead of loopback, so that pods can reach it.

Usage: python hack/localcluster.py up [--real-node] [workdir]   # prints the kubeconfig path, runs until
interrupted
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodeconfig import NODE_IP
from realnode import RealNode

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
# At Metadata level: every write, who made it and when, and every request of a ServiceAccount (the
# operator runs as one in the tests that count its requests by identity: what it asks at rest).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: Metadata
    userGroups: [system:serviceaccounts]
  - level: None
"""
# Fake nodes, one per region, so that data-residency affinity is scheduled for real. Each holds a
# fleet of thousands of models' pods (benchmarks), so that scheduling never waits for room.
FAKE_NODE_CAPACITY = {"cpu": "4000", "memory": "16Ti", "pods": "4000"}
NODES = {"node-eu-west-1": "eu-west-1", "node-eu-central-1": "eu-central-1", "node-us-east-1": "us-east-1"}
# The taint GPU node pools usually carry (GKE sets it, and platform teams copy it): only pods that
# tolerate it land there.
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class GPUNode:
    """A fake GPU node: its region, the product label NVIDIA's feature discovery sets, and the devices
    its device plugin would advertise."""

    region: str
    product: str
    devices: dict[str, str]


GPU_NODES = {
    "gpu-eu-west-1-a100": GPUNode("eu-west-1", "NVIDIA-A100-SXM4-80GB", {"nvidia.com/gpu": "8"}),
    "gpu-eu-west-1-h100": GPUNode("eu-west-1", "NVIDIA-H100-80GB-HBM3", {"nvidia.com/gpu": "8"}),
    "gpu-us-east-1-h100": GPUNode("us-east-1", "NVIDIA-H100-80GB-HBM3", {"nvidia.com/gpu": "8"}),
    # An A100 split by MIG into seven 1g.10gb slices ("mixed" strategy: each slice size its own resource).
    "gpu-eu-central-1-mig": GPUNode(
        "eu-central-1", "NVIDIA-A100-SXM4-80GB", {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "7"}
    ),
}


def find_asset(name: str) -> Path:
    """KUBEBUILDER_ASSETS wins (setup-envtest users), then the cache filled by build-controlplane.sh."""
    for var in ("KUBEBUILDER_ASSETS", "SECUREMODELS_ASSETS"):
        directory = os.environ.get(var)
        if directory and (Path(directory) / name).is_file():
            return Path(directory) / name
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{name} not found: run `make controlplane` or set SECUREMODELS_ASSETS")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class _Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, common_name: str) -> _Issuer:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        organization: str | None = None,
        *,
        server: bool = False,
        addresses: tuple[str, ...] = (),
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                        *(x509.IPAddress(ipaddress.ip_address(address)) for address in addresses),
                    ]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


@dataclass
class LocalCluster:
    """The running control plane. `kubeconfig` is an admin (system:masters) kubeconfig."""

    workdir: Path
    real_node: bool = False
    apiserver_flags: tuple[str, ...] = ()  # e.g. a short --etcd-compaction-interval for fault tests
    server: str = ""
    kubeconfig: Path = field(init=False)
    node: RealNode | None = None
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _arguments: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _ca: _Issuer | None = None

    def __post_init__(self) -> None:
        self.kubeconfig = self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def start(self, timeout: float = 90.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        address = "127.0.0.1"
        if self.real_node:
            # The API server listens on the node's bridge: host processes and pods both reach it there.
            self.node = RealNode(self.workdir / "node")
            self.node.prepare_host()
            address = NODE_IP
        pki = self._write_pki(address)
        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://{address}:{api_port}"
        self._spawn(
            "etcd",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--secure-port={api_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki['apiserver.crt']}",
            f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=false",
            # As in GKE: pods that request an extended resource (a GPU) tolerate the taint of its name.
            "--enable-admission-plugins=ExtendedResourceToleration",
            "--profiling=false",
            f"--audit-policy-file={self._write_audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=200",
            "--v=0",
            *self.apiserver_flags,
            *(self._kubelet_client_flags(pki) if self.real_node else ()),
        )
        self._write_kubeconfig(self.kubeconfig, pki["admin.crt"], pki["admin.key"])
        self._wait_ready(timeout)
        components = self.kubeconfig  # the components run as cluster admins too
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={components}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki['sa.key']}",
            f"--root-ca-file={pki['ca.crt']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller",
            "--concurrent-gc-syncs=5",
        )
        self._spawn(
            "kube-scheduler",
            f"--kubeconfig={components}",
            f"--authentication-kubeconfig={components}",
            f"--authorization-kubeconfig={components}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
        )
        self._spawn(
            "kwok",
            f"--kubeconfig={components}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            "--server-address=127.0.0.1:" + str(free_port()),
            f"--config={find_asset('kwok-stages.yaml')}",
        )
        self._create_nodes()
        if self.node is not None and self._ca is not None:
            self.node.route_service_range(SERVICE_CIDR)
            self.node.start(
                self.kubectl,
                self.kubeconfig,
                self.ca_file,
                self._ca.issue("kubelet", server=True, addresses=(NODE_IP,)),
            )

    @staticmethod
    def _kubelet_client_flags(pki: dict[str, Path]) -> tuple[str, ...]:
        """For logs, exec and port-forward: the API server reaches the kubelet at the node's InternalIP,
        as a cluster admin, and checks the kubelet's serving certificate against the cluster CA."""
        return (
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki['admin.crt']}",
            f"--kubelet-client-key={pki['admin.key']}",
            f"--kubelet-certificate-authority={pki['ca.crt']}",
        )

    def _spawn(self, name: str, *args: str) -> None:
        self._arguments[name] = args
        with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [str(find_asset(name)), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._processes.append(process)

    def kill(self, name: str) -> None:
        """SIGKILL one component (a fault to survive), e.g. "kube-apiserver" or "etcd"."""
        for process in self._processes:
            if Path(str(process.args[0])).name == name and process.poll() is None:  # type: ignore[index]
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                self._processes.remove(process)
                return
        raise ValueError(f"{name} is not running")

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a killed component again, with the arguments it had."""
        self._spawn(name, *self._arguments[name])
        if name == "kube-apiserver":
            self._wait_ready(timeout)

    @property
    def audit_log(self) -> Path:
        """Every write the API server accepted or refused, one JSON event per line (Metadata level)."""
        return self.workdir / "audit.log"

    def _write_audit_policy(self) -> Path:
        path = self.workdir / "audit-policy.yaml"
        path.write_text(AUDIT_POLICY)
        return path

    def _write_pki(self, address: str) -> dict[str, Path]:
        ca = self._ca = _Issuer.new("securemodels-local-ca")
        files: dict[str, bytes] = {"ca.crt": ca.cert.public_bytes(serialization.Encoding.PEM)}
        files["apiserver.crt"], files["apiserver.key"] = ca.issue(
            "kube-apiserver", server=True, addresses=(address,) if address != "127.0.0.1" else ()
        )
        files["admin.crt"], files["admin.key"] = ca.issue("admin", "system:masters")
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        files["sa.key"] = _pem_key(sa_key)
        files["sa.pub"] = sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        paths = {}
        for name, content in files.items():
            path = self.workdir / name
            path.write_bytes(content)
            path.chmod(0o600)
            paths[name] = path
        return paths

    def _write_kubeconfig(self, path: Path, cert: Path, key: Path) -> None:
        path.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: "{self.server}", certificate-authority: "{self.ca_file}"}}
users:
- name: admin
  user: {{client-certificate: "{cert}", client-key: "{key}"}}
contexts:
- name: local
  context: {{cluster: local, user: admin}}
current-context: local
"""
        )
        path.chmod(0o600)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.workdir / "admin.crt"), str(self.workdir / "admin.key"))
        return context

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        context = self.ssl_context()
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                url = f"{self.server}/readyz"  # https to our own API server
                with urllib.request.urlopen(url, context=context, timeout=5) as reply:  # noqa: S310
                    if reply.status == 200:
                        return
            except Exception as error:  # noqa: BLE001 - any failure means "not yet"
                last_error = error
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last_error}")

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.poll() is not None:
                name = Path(str(process.args[0])).name  # type: ignore[index]
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")

    @property
    def kubectl_path(self) -> str:
        return kubectl_binary()

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result.stdout

    def _create_nodes(self) -> None:
        manifests = [_fake_node(name, region) for name, region in NODES.items()]
        manifests += [
            _fake_node(
                name, gpu.region, {GPU_PRODUCT_LABEL: gpu.product}, gpu.devices, cpu="64", memory="512Gi"
            )
            for name, gpu in GPU_NODES.items()
        ]
        for attempt in range(50):
            try:
                self.kubectl(
                    "apply",
                    "-f",
                    "-",
                    stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
                )
                break
            except subprocess.CalledProcessError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        # Node admission taints new nodes not-ready; the node lifecycle controller (off here, since kwok's
        # nodes send no heartbeats) would lift it once kwok marks them Ready. Lift it directly, leaving
        # the GPU nodes their own taint.
        for name in NODES:
            self.kubectl(
                "patch", "node", name, "--type=json", "-p", '[{"op":"remove","path":"/spec/taints"}]'
            )
        gpu_taints = json.dumps([{"op": "add", "path": "/spec/taints", "value": [GPU_TAINT]}])
        for name in GPU_NODES:
            self.kubectl("patch", "node", name, "--type=json", "-p", gpu_taints)

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
            self.node = None
        for process in reversed(self._processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()


def _fake_node(
    name: str,
    region: str,
    labels: dict[str, str] | None = None,
    devices: dict[str, str] | None = None,
    *,
    cpu: str = FAKE_NODE_CAPACITY["cpu"],
    memory: str = FAKE_NODE_CAPACITY["memory"],
) -> dict[str, object]:
    """A node kwok runs pods on, in `region`, advertising `devices` (extended resources) as well."""
    capacity = {"cpu": cpu, "memory": memory, "pods": FAKE_NODE_CAPACITY["pods"], **(devices or {})}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/region": region,
                **(labels or {}),
            },
        },
        "status": {"allocatable": capacity, "capacity": dict(capacity)},
    }


def kubectl_binary() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def _die_with_parent() -> None:
    """Linux only: the component gets SIGKILL when the process that started it dies, even by SIGKILL."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextlib.contextmanager
def running_cluster(
    workdir: Path | None = None, *, real_node: bool = False, apiserver_flags: tuple[str, ...] = ()
) -> Iterator[LocalCluster]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="securemodels-cluster-")))
        cluster = LocalCluster(workdir, real_node=real_node, apiserver_flags=apiserver_flags)
        cluster.start()
        stack.callback(cluster.stop)
        yield cluster


def main(argv: list[str]) -> int:
    if argv[1:2] != ["up"]:
        print(__doc__, file=sys.stderr)
        return 2
    options = argv[2:]
    real_node = "--real-node" in options
    paths = [option for option in options if option != "--real-node"]
    workdir = Path(paths[0]) if paths else None
    with running_cluster(workdir, real_node=real_node) as cluster:
        print(cluster.kubeconfig, flush=True)
        print(f"export KUBECONFIG={cluster.kubeconfig}", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

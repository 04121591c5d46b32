"""One real node for the local cluster, beside kwok's fake ones: pods on it really run.

kwok only pretends to run pods, so nothing it hosts proves a data path. This node runs the real parts:
containerd 2 with Debian's runc, Debian's CNI plugins (bridge, host-local, portmap, loopback), kubelet and
kube-proxy (iptables) of the control plane's version, kube-router as the NetworkPolicy enforcer and
CoreDNS as pods in kube-system. Everything runs on this host as root (Linux only).

Placement: the node is tainted, so the existing tests' pods stay on the kwok nodes. Pods in namespaces
labelled `securemodels.io/real-node: "true"` get the toleration and a node selector from a
MutatingAdmissionPolicy, except the operator's model pods, which must run exactly what the operator
stamped on their template: their SMDs ask for the node in spec.scheduling (nodeconfig.model_scheduling).

Host state: a bridge with private addresses (10.250.0.0/24) the node and its pods live on, a route for
the Service range onto that bridge (so no cluster address ever leaves the host), iptables chains and
ipsets of kube-proxy, kubelet and kube-router, sysctls, a cgroup subtree and mounts under the work
directory. `cleanup_host` undoes all of it; it also runs first at every start, with what the last run
recorded, so a run killed with SIGKILL does not break the next one. A lock keeps two nodes off one host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from nodeconfig import (
    BRIDGE,
    CGROUP_PARENT,
    CNI_NETWORK,
    NODE_IP,
    NODE_NAME,
    NODE_NETWORK,
    PLACEMENT_KEY,
    TAINT,
    cni_config,
    containerd_config,
    coredns_manifests,
    kube_proxy_config,
    kubelet_config,
    placement_policy,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
STATE_DIR = Path("/run/securemodels-node")
# Chains and ipsets that kube-proxy, kubelet, kube-router and the CNI plugins create.
CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPSET_PREFIXES = ("KUBE-", "kube-router-")
# Sysctls the node's components set; their previous values are put back at cleanup.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.conf.all.route_localnet",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
# Directories the kubelet, containerd's shims and the CNI library use whatever they are told; each one
# that did not exist before the node started is removed with it.
OUTSIDE_DIRECTORIES = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
)
# The nftables tables that iptables-nft creates on first use; removed when we created them and they
# hold nothing any more.
IPTABLES_NFT_TABLES = tuple(
    f"{family} {table}" for family in ("ip", "ip6") for table in ("filter", "nat", "mangle", "raw")
)
START_TIMEOUT = 120.0


class NodeStartError(RuntimeError):
    """A node component did not come up; the message carries the end of its log."""


def node_asset(name: str) -> Path:
    """A binary built by hack/build-node.sh (SECUREMODELS_NODE_ASSETS), else one on PATH."""
    directory = os.environ.get("SECUREMODELS_NODE_ASSETS")
    if directory and (Path(directory) / name).exists():
        return Path(directory) / name
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{name} not found: run `make node` or set SECUREMODELS_NODE_ASSETS")


def images_manifest() -> dict[str, dict[str, str]]:
    """The images hack/images/build.sh made: name -> reference (by digest), tag and OCI archive."""
    path = os.environ.get("SECUREMODELS_IMAGES")
    if not path:
        raise FileNotFoundError("SECUREMODELS_IMAGES is not set: run `make images` (hack/images/build.sh)")
    return dict(json.loads(Path(path).read_text()))


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _tail(path: Path, size: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-size:]
    return "(no log)"


# ------------------------------------------------------------------------------------------- host state


def _cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup v1 hierarchies (and the v2 one of a hybrid host), each with our subtree in it."""
    return [path for path in sorted(CGROUP_ROOT.iterdir()) if (path / "cgroup.procs").exists()]


def _kill_cgroup_processes() -> None:
    """SIGKILL every process in our cgroup subtree: containers, shims and the node's components."""
    for _ in range(50):
        pids = {
            int(pid)
            for hierarchy in _cgroup_hierarchies()
            if (hierarchy / CGROUP_PARENT).is_dir()
            for procs in (hierarchy / CGROUP_PARENT).rglob("cgroup.procs")
            for pid in procs.read_text().split()
        }
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise RuntimeError(f"processes in cgroup {CGROUP_PARENT} survived SIGKILL: {sorted(pids)}")


def _remove_cgroups() -> None:
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / CGROUP_PARENT
        if not top.is_dir():
            continue
        for directory in sorted((path for path in top.rglob("*") if path.is_dir()), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
        top.rmdir()


def _create_cgroups() -> None:
    """Our subtree in every hierarchy: the kubelet's cgroupRoot must exist, and the pids hierarchy also
    holds the node's components, so that cleanup finds every process the node started."""
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / CGROUP_PARENT
        top.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":  # a v1 cpuset starts empty and admits no process until filled
            for name in ("cpuset.cpus", "cpuset.mems"):
                (top / name).write_text((hierarchy / name).read_text())
    (CGROUP_ROOT / "pids" / CGROUP_PARENT / "system").mkdir(exist_ok=True)


def _unmount_under(roots: list[Path]) -> None:
    """Unmount every mount below these directories, deepest first (secrets, rootfs, netns, shm)."""
    prefixes = [str(root.resolve()) + "/" for root in roots if root.exists()]
    if not prefixes:
        return
    for _ in range(5):
        mounts = [
            line.split()[4].encode().decode("unicode_escape")
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ]
        ours = sorted({m for m in mounts if any((m + "/").startswith(p) for p in prefixes)}, reverse=True)
        if not ours:
            return
        for mount in ours:
            if _run("umount", mount, check=False).returncode != 0:
                _run("umount", "--lazy", mount, check=False)
    raise RuntimeError(f"could not unmount everything under {prefixes}")


def _remove_chains(tool: str) -> None:
    """Delete our chains from every table, and the rules in other chains that jump to them."""
    if shutil.which(tool) is None:
        return
    for table in ("filter", "nat", "mangle", "raw"):
        listing = _run(tool, "-w", "-t", table, "-S", check=False)
        if listing.returncode != 0:
            continue
        rules = [shlex.split(line) for line in listing.stdout.splitlines()]
        ours = {rule[1] for rule in rules if rule[0] == "-N" and rule[1].startswith(CHAIN_PREFIXES)}
        if not ours:
            continue
        for rule in rules:
            if (
                rule[0] == "-A"
                and rule[1] not in ours
                and "-j" in rule
                and rule[rule.index("-j") + 1] in ours
            ):
                _run(tool, "-w", "-t", table, "-D", *rule[1:], check=False)
        for chain in ours:
            _run(tool, "-w", "-t", table, "-F", chain, check=False)
        for chain in ours:
            _run(tool, "-w", "-t", table, "-X", chain, check=False)


def _remove_ipsets() -> None:
    if shutil.which("ipset") is None:
        return
    for name in _run("ipset", "list", "-n", check=False).stdout.split():
        if name.startswith(IPSET_PREFIXES):
            _run("ipset", "destroy", name, check=False)


def _remove_links() -> None:
    """Pod veths left on our bridge (their namespaces are gone or going), then the bridge itself."""
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        return
    for line in _run("ip", "-o", "link", "show", "master", BRIDGE).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        _run("ip", "link", "delete", name, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)


def _nft_tables() -> set[str]:
    if shutil.which("nft") is None:
        return set()
    listing = _run("nft", "list", "tables", check=False).stdout.splitlines()
    return {line.removeprefix("table ").strip() for line in listing if line.startswith("table ")}


def _remove_empty_nft_tables(existed_before: list[str]) -> None:
    for table in sorted(_nft_tables() & set(IPTABLES_NFT_TABLES) - set(existed_before)):
        family, name = table.split()
        listing = _run("nft", "-a", "list", "table", family, name, check=False).stdout.splitlines()
        rules = [
            line
            for line in listing
            if "# handle" in line and not line.strip().startswith(("table ", "chain ", "set "))
        ]
        if not rules:
            _run("nft", "delete", "table", family, name, check=False)


def cleanup_host() -> None:
    """Undo everything a node changed on this host, as recorded by the last start. Idempotent."""
    state_file = STATE_DIR / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    _kill_cgroup_processes()
    if state.get("workdir"):
        _unmount_under([Path(state["workdir"])])
    _remove_cgroups()
    for tool in ("iptables", "ip6tables"):
        _remove_chains(tool)
    _remove_ipsets()
    _remove_empty_nft_tables(state.get("nft_tables") or [])
    _remove_links()
    for directory in state.get("absent_directories") or []:
        shutil.rmtree(directory, ignore_errors=True)
    for name, value in (state.get("sysctls") or {}).items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value)
    for result in Path("/var/lib/cni/results").glob(f"{CNI_NETWORK}-*"):
        result.unlink()
    state_file.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- node


@dataclass
class NodeProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class RealNode:
    """The node's processes and the host state they need. `prepare_host` runs before the API server
    starts (which listens on the node's bridge), `start` once the control plane is up."""

    workdir: Path
    kubeconfig: Path = field(init=False)
    _processes: list[NodeProcess] = field(default_factory=list)
    _lock: TextIO | None = None

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.kubeconfig = self.workdir / "node.kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    # -- host

    def prepare_host(self) -> None:
        if os.geteuid() != 0 or not CGROUP_ROOT.is_dir():
            raise NodeStartError("the real node needs Linux and root (containers, iptables, a bridge)")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._lock = (STATE_DIR / "lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise NodeStartError(f"another real node runs on this host ({STATE_DIR / 'lock'})") from error
        cleanup_host()
        originals = {
            name: _sysctl_path(name).read_text().strip() for name in SYSCTLS if _sysctl_path(name).exists()
        }
        state = {
            "workdir": str(self.workdir),
            "sysctls": originals,
            "absent_directories": [str(path) for path in OUTSIDE_DIRECTORIES if not path.exists()],
            "nft_tables": sorted(_nft_tables()),
        }
        (STATE_DIR / "state.json").write_text(json.dumps(state))
        self.workdir.mkdir(parents=True, exist_ok=True)
        _create_cgroups()
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "address", "add", f"{NODE_IP}/{NODE_NETWORK.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for name in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
            _sysctl_path(name).write_text("1")

    def route_service_range(self, service_cidr: str) -> None:
        """Service addresses that kube-proxy does not translate go onto our bridge, never off the host."""
        _run("ip", "route", "replace", service_cidr, "dev", BRIDGE)

    def stop(self) -> None:
        kubelet = [item for item in self._processes if item.name == "kubelet"]
        for item in kubelet + [item for item in reversed(self._processes) if item.name != "kubelet"]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(item.process.pid, signal.SIGTERM)
            try:
                item.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(item.process.pid, signal.SIGKILL)
                item.process.wait()
        self._processes.clear()
        if self._lock is not None:
            cleanup_host()
            self._lock.close()
            self._lock = None

    # -- processes

    def _spawn(self, name: str, binary: Path, *args: str) -> NodeProcess:
        log = self.workdir / f"{name}.log"
        # containerd finds its runc shim on PATH; kube-router and the kubelet call iptables, ipset, mount.
        path = os.pathsep.join(
            [str(node_asset("containerd-shim-runc-v2").parent), os.environ.get("PATH", ""), "/usr/sbin:/sbin"]
        )
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(binary), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PATH": path},
                start_new_session=True,
                preexec_fn=_join_node_cgroup_and_die_with_parent,
            )
        started = NodeProcess(name, process, log)
        self._processes.append(started)
        return started

    def check_alive(self) -> None:
        for item in self._processes:
            if item.process.poll() is not None:
                raise NodeStartError(f"{item.name} exited with {item.process.returncode}:\n{_tail(item.log)}")

    def _wait(self, probe: Callable[[], bool], what: str, log: Path, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if probe():
                return
            time.sleep(0.5)
        raise NodeStartError(f"timed out after {timeout}s waiting for {what}; {log.name}:\n{_tail(log)}")

    # -- start

    def start(
        self,
        kubectl: Callable[..., str],
        admin_kubeconfig: Path,
        ca_file: Path,
        serving_pair: tuple[bytes, bytes],
    ) -> None:
        """Start the node and wait until it is Ready with cluster DNS serving. `serving_pair` is the
        kubelet's serving certificate and key for NODE_IP, issued by the cluster CA."""
        shutil.copyfile(admin_kubeconfig, self.kubeconfig)
        images = images_manifest()
        containerd = self._start_containerd(images["pause"]["reference"])
        self._import_images(images)
        self._write_cni_config()
        kubelet = self._start_kubelet(ca_file, serving_pair)
        self._wait(lambda: _succeeds(kubectl, "get", "node", NODE_NAME), "the node to register", kubelet.log)
        # Admission taints a new node not-ready; the node lifecycle controller that would lift it is off
        # (kwok's nodes send no heartbeats), so it is lifted here, keeping our own taint.
        node_spec = {"podCIDR": str(NODE_NETWORK), "podCIDRs": [str(NODE_NETWORK)], "taints": [TAINT]}
        kubectl("patch", "node", NODE_NAME, "--type=merge", "-p", json.dumps({"spec": node_spec}))
        self._start_kube_proxy()
        self._start_kube_router()
        ready = '{.status.conditions[?(@.type=="Ready")].status}'
        self._wait(
            lambda: _output(kubectl, "get", "node", NODE_NAME, "-o", f"jsonpath={ready}") == "True",
            "the node to be Ready",
            kubelet.log,
        )
        kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(placement_policy()))
        coredns = coredns_manifests(images["coredns"]["reference"])
        kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(coredns))
        self._wait(
            lambda: (
                _output(
                    kubectl,
                    "get",
                    "deployment",
                    "coredns",
                    "-n",
                    "kube-system",
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                )
                == "1"
            ),
            "CoreDNS to be ready",
            containerd.log,
        )

    def _start_containerd(self, sandbox_image: str) -> NodeProcess:
        root = self.workdir / "containerd"
        (root / "state").mkdir(parents=True, exist_ok=True)
        config = root / "config.toml"
        runc = shutil.which("runc")
        if runc is None:
            raise NodeStartError("runc not found: run `make node-packages`")
        config.write_text(containerd_config(root, self.workdir / "cni" / "net.d", Path(runc), sandbox_image))
        process = self._spawn(
            "containerd", node_asset("containerd"), f"--config={config}", "--log-level=warn"
        )
        self._wait(lambda: self._ctr("version", check=False).returncode == 0, "containerd", process.log)
        return process

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(
            str(node_asset("ctr")),
            f"--address={self.containerd_socket}",
            "--namespace=k8s.io",
            *args,
            check=check,
        )

    def _import_images(self, images: dict[str, dict[str, str]]) -> None:
        """Each OCI archive, unpacked for the CRI, and named by its digest as well as its tag: pods
        name images `repo@sha256:...`, which the kubelet finds locally only under that name."""
        for image in images.values():
            self._ctr("images", "import", "--local", image["archive"])
            self._ctr("images", "tag", "--force", image["tag"], image["reference"])

    def _write_cni_config(self) -> None:
        directory = self.workdir / "cni" / "net.d"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "10-securemodels.conflist").write_text(
            json.dumps(cni_config(self.workdir / "cni" / "ipam"))
        )

    def _start_kubelet(self, ca_file: Path, serving_pair: tuple[bytes, bytes]) -> NodeProcess:
        directory = self.workdir / "kubelet"
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "serving.crt", directory / "serving.key"
        cert.write_bytes(serving_pair[0])
        key.write_bytes(serving_pair[1])
        key.chmod(0o600)
        config = directory / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                kubelet_config(self.containerd_socket, ca_file, cert, key, free_port(), directory / "pods")
            )
        )
        return self._spawn(
            "kubelet",
            node_asset("kubelet"),
            f"--config={config}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={directory / 'root'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={PLACEMENT_KEY}=true",
            "--v=1",
        )

    def _start_kube_proxy(self) -> NodeProcess:
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(self.kubeconfig, free_port(), free_port())))
        return self._spawn("kube-proxy", node_asset("kube-proxy"), f"--config={config}", "--v=1")

    def _start_kube_router(self) -> NodeProcess:
        return self._spawn(
            "kube-router",
            node_asset("kube-router"),
            f"--kubeconfig={self.kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            "--enable-ipv6=false",
            "--health-port=0",
            "--metrics-port=0",
            "--v=1",
        )


def _join_node_cgroup_and_die_with_parent() -> None:
    """In the child before exec: join our pids cgroup, so cleanup finds it and everything it starts
    (containerd's shims outlive containerd), and get SIGKILL when the harness dies."""
    import ctypes

    (CGROUP_ROOT / "pids" / CGROUP_PARENT / "system" / "cgroup.procs").write_text(str(os.getpid()))
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _succeeds(kubectl: Callable[..., str], *args: str) -> bool:
    try:
        kubectl(*args)
    except subprocess.CalledProcessError:
        return False
    return True


def _output(kubectl: Callable[..., str], *args: str) -> str:
    try:
        return kubectl(*args)
    except subprocess.CalledProcessError:
        return ""

"""The operator with a fleet of SMDs in one namespace on the local control plane, beside a plain client
doing the same writes.

- time until every SMD is Ready, from one `kubectl apply` of all of them;
- the same child objects server-side-applied by a plain concurrent client, until every Deployment is
  available (kube-controller-manager, the scheduler and kwok do the same work in both runs);
- the operator's peak RSS;
- API writes, requests and CPU during resyncs of an unchanged fleet (should be none);
- requests after one cluster-wide RBAC change (the authorizer is asked again for every model);
- how fast each kind of tampering is reported and repaired (bench/tamper_bench.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient, KubeConfig, codecs
from prometheus_client.parser import text_string_to_metric_families

from bench import tamper_bench
from localcluster import LocalCluster, free_port
from operatorprocess import start_operator
from securemodels import desired, pki
from securemodels.api.v1alpha1 import SecureModelDeploymentSpec
from securemodels.config import OperatorConfig
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context
from securemodels.desired.naming import Owner
from securemodels.handlers.runtime import FULL_RESYNC_EVERY

IMAGE = "registry.example.com/ml/bench@sha256:" + "ef" * 32
OPERATOR_NAMESPACE = "securemodels-system"
RESYNC_SECONDS = 5.0
# At rest: one whole cycle of resyncs, the full one (which judges every SMD afresh) among them, so that
# the CPU share is the average a settled fleet costs, wherever the window falls.
NOOP_RESYNCS = FULL_RESYNC_EVERY
WORKERS = 4


def smd(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "securemodels.io/v1alpha1",
        "kind": "SecureModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"image": IMAGE}},
    }


def wait(probe: Any, timeout: float, interval: float = 0.5) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if probe():
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"not done after {timeout}s")


def _json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


def _api_writes(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "securemodels_api_writes_total"
    )


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def _peak_rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM")


def _rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS")


def all_ready(cluster: LocalCluster, namespace: str, count: int) -> bool:
    items = _json(cluster, "get", "smd", "-n", namespace)["items"]
    return len(items) == count and all((item.get("status") or {}).get("phase") == "Ready" for item in items)


def prepare(cluster: LocalCluster) -> None:
    """The CRD and the operator's namespace, as `helm install` would leave them."""
    crd = Path(__file__).resolve().parents[1] / "crds" / "securemodels.io_securemodeldeployments.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(crd))
    established = '{.status.conditions[?(@.type=="Established")].status}'

    def is_established() -> bool:
        try:
            return cluster.kubectl("get", "-f", str(crd), "-o", f"jsonpath={established}") == "True"
        except subprocess.CalledProcessError:  # the API server is still settling after the CRD appeared
            return False

    wait(is_established, timeout=60)
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)


def operator_run(
    cluster: LocalCluster, count: int, workdir: Path, tamperings: list[tuple[str, float, float | None]] | None
) -> dict[str, float]:
    """The fleet's numbers; `tamperings`, if given, receives (what, seconds to report, seconds to
    repair)."""
    namespace = "bench-operator"
    cluster.kubectl("create", "namespace", namespace)
    port = free_port()
    settings = {
        "namespace": OPERATOR_NAMESPACE,
        "resyncSeconds": RESYNC_SECONDS,
        "workers": WORKERS,
    }
    process = start_operator(workdir, settings, port, cluster.kubeconfig)
    try:
        wait(lambda: _ready_endpoint(port), timeout=60, interval=0.2)
        started = time.monotonic()
        cluster.kubectl(
            "apply", "-f", "-", stdin=yaml.safe_dump_all([smd(f"m{i}", namespace) for i in range(count)])
        )

        wait(lambda: all_ready(cluster, namespace, count), timeout=3600, interval=1.0)
        to_ready = time.monotonic() - started
        time.sleep(RESYNC_SECONDS * 2)  # the last Ready transitions settle
        writes_before, requests_before = _api_writes(port), tamper_bench.requests_sent(port)
        cpu_before = tamper_bench.cpu_seconds(process.pid)
        time.sleep(RESYNC_SECONDS * NOOP_RESYNCS)
        noop_writes = _api_writes(port) - writes_before
        noop_requests = tamper_bench.requests_sent(port) - requests_before
        noop_cpu = tamper_bench.cpu_seconds(process.pid) - cpu_before
        rest_rss = _rss_mib(process.pid)
        rbac_requests = _requests_after_rbac_change(cluster, port)
        if tamperings is not None:
            tamperings.extend(
                tamper_bench.tampering_times(cluster, namespace, [f"m{i}" for i in range(count)])
            )
        return {
            "operator_seconds_to_ready": to_ready,
            "operator_peak_rss_mib": _peak_rss_mib(process.pid),
            "operator_rest_rss_mib": rest_rss,
            "noop_resync_api_writes": noop_writes,
            "noop_requests_per_smd_per_resync": noop_requests / count / NOOP_RESYNCS,
            "noop_cpu_share": noop_cpu / (RESYNC_SECONDS * NOOP_RESYNCS),
            "rbac_change_requests_per_smd": rbac_requests / count,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def _requests_after_rbac_change(cluster: LocalCluster, port: int) -> float:
    """Requests the operator sends after one binding every service account could be granted through
    changes (a harmless rule): it asks the authorizer again about every model's account."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "bench-harmless"},
        "rules": [{"nonResourceURLs": ["/bench"], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "bench-harmless"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-harmless"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:serviceaccounts"}
        ],
    }
    before = tamper_bench.requests_sent(port)
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([role, binding]))
    return _sent_once_quiet(port) - before


def _sent_once_quiet(port: int, quiet: float = RESYNC_SECONDS, timeout: float = 1800.0) -> float:
    """The operator's request count once it has sent none for `quiet` seconds: a large fleet takes
    longer than any fixed window to ask everything again."""
    sent, since = tamper_bench.requests_sent(port), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the operator was still sending requests after {timeout:.0f}s")
        time.sleep(0.25)
        try:
            now = tamper_bench.requests_sent(port)
        except OSError:  # too busy to answer /metrics in time: not quiet
            since = time.monotonic()
            continue
        if now != sent:
            sent, since = now, time.monotonic()
    return sent


def _ready_endpoint(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _children(count: int, namespace: str) -> list[dict[str, Any]]:
    """What the operator would write for `count` SMDs, as a plain client would hold it: no owner."""
    now = datetime.now(UTC)
    config = OperatorConfig(namespace=OPERATOR_NAMESPACE)
    ca = pki.plan_ca(None, now, "ECDSA-P256", timedelta(days=365)).state
    objects = []
    for index in range(count):
        owner = Owner(name=f"m{index}", namespace=namespace, uid=f"bench-{index}", generation=1)
        spec = SecureModelDeploymentSpec.model_validate({"model": {"image": IMAGE}})
        context = Context(owner=owner, spec=spec, config=config, now=now)
        pair = pki.issue_server_certificate(
            ca, mtls.dns_names(context), now, timedelta(hours=24), "ECDSA-P256"
        )
        server = mtls.ServerTLS(pair, ca.bundle_pem(), pki.certificate_info(pair.cert_pem).sha256_fingerprint)
        for manifest in desired.build(context, server, clients={}).owned:
            metadata = {key: value for key, value in manifest["metadata"].items() if key != "ownerReferences"}
            objects.append({**manifest, "metadata": metadata})
    return objects


def baseline_run(cluster: LocalCluster, count: int) -> dict[str, float]:
    namespace = "bench-baseline"
    cluster.kubectl("create", "namespace", namespace)
    objects = _children(count, namespace)

    async def apply_all() -> None:
        client = AsyncClient(KubeConfig.from_file(cluster.kubeconfig))
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for item in objects:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                await client.apply(codecs.from_dict(queue.get_nowait()), field_manager="bench-baseline")

        try:
            await asyncio.gather(*(worker() for _ in range(WORKERS)))
        finally:
            await client.close()

    started = time.monotonic()
    asyncio.run(apply_all())
    applied = time.monotonic() - started

    def all_available() -> bool:
        items = _json(cluster, "get", "deployment", "-n", namespace)["items"]
        return len(items) == count and all(
            (item.get("status") or {}).get("availableReplicas", 0) >= 1 for item in items
        )

    wait(all_available, timeout=3600, interval=1.0)
    return {
        "baseline_objects": float(len(objects)),
        "baseline_seconds_to_apply": applied,
        "baseline_seconds_to_available": time.monotonic() - started,
    }

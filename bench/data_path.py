"""What the mTLS sidecar costs on the data path, measured on the real node.

One client pod calls the model stub twice over: through an SMD (Service -> nginx sidecar, TLS 1.3 with
a client certificate -> model on 127.0.0.1), and directly (Service -> the same stub image in a plain pod,
listening on its pod address, no TLS). Same client, same request, same node, same run, alternating
rounds; reported as requests per second and median latency, and their ratios.

Run alone with `python -m bench.data_path` (rewrites only its section of BENCHMARKS.md); `make bench`
runs it after the other benchmarks.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from localcluster import LocalCluster, free_port, running_cluster
from nodeconfig import PLACEMENT_KEY, model_scheduling
from operatorprocess import start_operator
from realnode import images_manifest

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## The data path through the mTLS sidecar, on the real node"
OPERATOR = "bench-operator"
MODELS = "bench-models"
CLIENTS = "bench-clients"
DIRECT = "bench-direct"
ROUNDS = 2
ROUND_SECONDS = 10
CONNECTIONS = 4
TLS = "/etc/tls/client"


def _kubectl(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    return cluster.kubectl(*args, stdin=stdin)


def _apply(cluster: LocalCluster, *manifests: dict[str, Any]) -> None:
    _kubectl(cluster, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(manifests))


def _namespace(name: str) -> dict[str, Any]:
    labels = {"pod-security.kubernetes.io/enforce": "restricted", PLACEMENT_KEY: "true"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _pod(name: str, namespace: str, image: str, env: dict[str, str], secret: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
        },
    }
    if secret:
        container["volumeMounts"] = [{"name": "tls", "mountPath": TLS, "readOnly": True}]
        pod["spec"]["volumes"] = [{"name": "tls", "secret": {"secretName": secret}}]
    return pod


def _wait(cluster: LocalCluster, *args: str, timeout: str = "180s") -> None:
    _kubectl(cluster, "wait", f"--timeout={timeout}", *args)


def _bench(cluster: LocalCluster, url: str, *options: str) -> dict[str, Any]:
    output = _kubectl(
        cluster, "exec", "loadgen", "-n", CLIENTS, "--", "python3", "/app/client.py", "bench", url,
        "--seconds", str(ROUND_SECONDS), "--connections", str(CONNECTIONS), *options,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(output)
    if not result.get("requests") or result.get("errors"):
        raise RuntimeError(f"benchmark round failed: {result}")
    return result


def run(cluster: LocalCluster, workdir: Path) -> dict[str, float]:
    images = {name: entry["reference"] for name, entry in images_manifest().items()}
    _apply(cluster, *(_namespace(name) for name in (OPERATOR, MODELS, CLIENTS, DIRECT)))
    # The node holds the images and there is no registry to ask.
    settings = {
        "namespace": OPERATOR,
        "watchNamespaces": [MODELS, CLIENTS],
        "resyncSeconds": 30,
        "sidecarImage": images["sidecar"],
        "imagePullPolicy": "IfNotPresent",
    }
    _kubectl(
        cluster,
        "apply",
        "--server-side",
        "-f",
        str(ROOT / "crds" / "securemodels.io_securemodeldeployments.yaml"),
    )
    _wait(cluster, "--for=condition=Established", "crd/securemodeldeployments.securemodels.io")
    operator = start_operator(workdir, settings, free_port(), cluster.kubeconfig)
    try:
        _apply(
            cluster,
            {
                "apiVersion": "securemodels.io/v1alpha1",
                "kind": "SecureModelDeployment",
                "metadata": {"name": "bench", "namespace": MODELS},
                "spec": {
                    "model": {"image": images["modelstub"], "replicas": 1},
                    "network": {
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {
                                            "matchLabels": {"kubernetes.io/metadata.name": CLIENTS}
                                        }
                                    }
                                ]
                            }
                        ]
                    },
                    "mtls": {"clients": [{"name": "loadgen", "namespace": CLIENTS}]},
                    "scheduling": model_scheduling(),
                },
            },
            _pod("direct", DIRECT, images["modelstub"], {"SECUREMODELS_BIND_ADDRESS": "0.0.0.0"}, None),  # noqa: S104
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "direct", "namespace": DIRECT},
                "spec": {"selector": {"app": "direct"}, "ports": [{"port": 8080, "targetPort": 8080}]},
            },
        )
        _wait(cluster, "--for=condition=Ready", "smd/bench", "-n", MODELS)
        _apply(cluster, _pod("loadgen", CLIENTS, images["client"], {}, f"bench.{MODELS}.client-loadgen"))
        _wait(cluster, "--for=condition=Ready", "pod/loadgen", "-n", CLIENTS)
        _wait(cluster, "--for=condition=Ready", "pod/direct", "-n", DIRECT)
        tls = ["--cert", f"{TLS}/tls.crt", "--key", f"{TLS}/tls.key", "--ca", f"{TLS}/ca.crt"]
        sidecar, direct = [], []
        for _ in range(ROUNDS):
            direct.append(_bench(cluster, f"http://direct.{DIRECT}.svc:8080/v1/predict"))
            sidecar.append(_bench(cluster, f"https://bench.{MODELS}.svc/v1/predict", *tls))
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    results = {
        "sidecar_rps": statistics.mean(item["rps"] for item in sidecar),
        "sidecar_p50_ms": statistics.mean(item["p50_ms"] for item in sidecar),
        "sidecar_p99_ms": statistics.mean(item["p99_ms"] for item in sidecar),
        "direct_rps": statistics.mean(item["rps"] for item in direct),
        "direct_p50_ms": statistics.mean(item["p50_ms"] for item in direct),
        "direct_p99_ms": statistics.mean(item["p99_ms"] for item in direct),
    }
    results["rps_ratio"] = results["sidecar_rps"] / results["direct_rps"]
    results["p50_ratio"] = results["sidecar_p50_ms"] / results["direct_p50_ms"]
    return results


def section(results: dict[str, float]) -> str:
    return f"""{HEADING}

One client pod ({CONNECTIONS} kept-alive connections, Python's http.client, GET of a small JSON
answer), {ROUNDS} rounds of {ROUND_SECONDS} s per path, alternating; the mean of the rounds. Client,
sidecar, model and the whole control plane share the same 2 CPUs; the sidecar runs under the operator's
CPU limit (500m).

| path | requests/s | median latency | p99 latency |
| --- | --- | --- | --- |
| through the sidecar: Service, nginx with TLS 1.3 and a client certificate, model on 127.0.0.1 | \
{results["sidecar_rps"]:.0f} | {results["sidecar_p50_ms"]:.2f} ms | {results["sidecar_p99_ms"]:.2f} ms |
| direct: Service, the same model stub on its pod address, plain HTTP | \
{results["direct_rps"]:.0f} | {results["direct_p50_ms"]:.2f} ms | {results["direct_p99_ms"]:.2f} ms |
| ratio sidecar / direct | {results["rps_ratio"]:.2f} | {results["p50_ratio"]:.2f} | |

Connections are kept alive, so the TLS handshake is paid once per connection; the cost measured is the
second hop through nginx and the encryption of every request and answer.
"""


def write_section(text: str) -> None:
    """Put the section into BENCHMARKS.md, replacing an earlier one, leaving the others as they are."""
    path = ROOT / "BENCHMARKS.md"
    report = path.read_text()
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    report = pattern.sub(text, report) if pattern.search(report) else report.rstrip() + "\n\n" + text
    path.write_text(report)


def measure() -> dict[str, float]:
    """A fresh local cluster with its real node, for this benchmark only."""
    with (
        tempfile.TemporaryDirectory(prefix="securemodels-bench-") as temp,
        running_cluster(real_node=True) as cluster,
    ):
        started = time.monotonic()
        results = run(cluster, Path(temp))
        results["seconds"] = time.monotonic() - started
        return results


def main() -> int:
    results = measure()
    write_section(section(results))
    print(section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

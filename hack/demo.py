"""`make demo`: a local control plane, the operator, examples/basic.yaml, and what it all became.

With USE_EXISTING_CLUSTER=1 the current kubeconfig is used instead of starting a control plane. Everything
the demo started is stopped at the end; on an existing cluster the example is left in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from localcluster import free_port, kubectl_binary, running_cluster
from operatorprocess import start_operator

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "securemodels.io_securemodeldeployments.yaml"
EXAMPLE = ROOT / "examples" / "basic.yaml"
OPERATOR_NAMESPACE = "securemodels-system"
NAMESPACE, NAME, CLIENT_NAMESPACE = "ml-prod", "fraud-detector", "ml-gateway"

WHAT_IT_PROTECTS = {
    "Deployment": "model + mTLS sidecar: digest-pinned, non-root, read-only, no token, EU regions only",
    "Service": "exposes only the TLS port 443; the model itself listens on localhost",
    "ServiceAccount": "the model's identity: no token mounted, no permissions bound",
    "NetworkPolicy": "default deny both ways; only the gateway may call, only DNS goes out",
    "Role": "least privilege for people: viewers read, deployers edit this SMD only",
    "RoleBinding": "binds those Roles to the declared viewers and deployers, nobody else",
    "Secret": "the server certificate and key, issued by the operator's CA and rotated before expiry",
    "ConfigMap": "the sidecar's nginx.conf: TLS 1.3, client certificate required, declared clients only",
}


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def kubectl(kubeconfig: Path | None, *args: str, check: bool = True) -> str:
    command = [kubectl_binary(), *([f"--kubeconfig={kubeconfig}"] if kubeconfig else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def control_plane() -> Iterator[Path | None]:
    if os.environ.get("USE_EXISTING_CLUSTER") == "1":
        step("Using the current kubeconfig (USE_EXISTING_CLUSTER=1)")
        yield None
        return
    step("Starting a local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes")
    with running_cluster() as cluster:
        print(f"    kubeconfig: {cluster.kubeconfig}")
        yield cluster.kubeconfig


@contextlib.contextmanager
def operator(kubeconfig: Path | None, workdir: Path) -> Iterator[Path]:
    settings = {"namespace": OPERATOR_NAMESPACE, "resyncSeconds": 10}
    process = start_operator(workdir, settings, free_port(), kubeconfig)
    log = workdir / "operator.log"
    try:
        yield log
    finally:
        process.terminate()
        process.wait(timeout=30)


def show_result(kubeconfig: Path | None) -> None:
    step("kubectl get smd -A")
    print(kubectl(kubeconfig, "get", "smd", "-A"))
    found = json.loads(kubectl(kubeconfig, "get", "smd", NAME, "-n", NAMESPACE, "-o", "json"))
    step("Controls, judged from the live objects")
    for control in found["status"]["controls"]:
        print(f"    {control['name']:<20} {control['status']:<8} {control['message']}")
    step(f"What the operator created in {NAMESPACE}, and what each object protects")
    selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/managed-by=secure-model-operator"
    kinds = "deployment,service,serviceaccount,networkpolicy,role,rolebinding,secret,configmap"
    children = json.loads(kubectl(kubeconfig, "get", kinds, "-n", NAMESPACE, "-l", selector, "-o", "json"))
    for item in children["items"]:
        print(f"    {item['kind'] + '/' + item['metadata']['name']:<36} {WHAT_IT_PROTECTS[item['kind']]}")
    step(f"The gateway's client certificate, delivered into {CLIENT_NAMESPACE}")
    print(
        kubectl(kubeconfig, "get", "secret,configmap", "-n", CLIENT_NAMESPACE, "-l", selector.split(",")[1])
    )


def main() -> int:
    with control_plane() as kubeconfig, tempfile.TemporaryDirectory(prefix="securemodels-demo-") as temp:
        step("Installing the CRD")
        kubectl(kubeconfig, "apply", "--server-side", "-f", str(CRD))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD))
        kubectl(kubeconfig, "create", "namespace", OPERATOR_NAMESPACE, check=False)
        with operator(kubeconfig, Path(temp)) as log:
            step("Operator running; applying examples/basic.yaml")
            print(kubectl(kubeconfig, "apply", "-f", str(EXAMPLE)), end="")
            step("Waiting for Ready (kubectl wait --for=condition=Ready)")
            started = time.monotonic()
            result = subprocess.run(
                [
                    kubectl_binary(),
                    *([f"--kubeconfig={kubeconfig}"] if kubeconfig else []),
                    "wait",
                    "--for=condition=Ready",
                    f"smd/{NAME}",
                    "-n",
                    NAMESPACE,
                    "--timeout=120s",
                ],
                check=False,
            )
            if result.returncode != 0:
                print(log.read_text()[-4000:], file=sys.stderr)
                return 1
            print(f"    Ready after {time.monotonic() - started:.1f}s")
            show_result(kubeconfig)
        step("Stopping what the demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())

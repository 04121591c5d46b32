"""Certificate rotation on running pods, twice, while a client keeps calling.

The Helm-installed operator runs on real time, and certificates live at least an hour (CRD minimum); so
this test runs the real operator in-process with a clock it can move (support.operator.FakeClock), for
namespaces of its own. Certificates are cut from the operator's clock but checked by nginx and the
client against real time, so the clock starts far enough in the past that every certificate it issues,
before and after each jump, is already valid and not yet expired in real time: with certificateDuration
24h and renewBefore 23h30m, a certificate is due 30 minutes after it was issued, and each jump of 31
minutes makes one rotation.

The client retries a refused connection once, should a replaced pod stop listening before kube-proxy
stops sending it connections (the sidecar and the model sleep before they stop, so that should be
rare). The count is printed; a TLS failure is never retried.
"""

from __future__ import annotations

import functools
import json
import subprocess
from datetime import timedelta
from typing import Any

from e2e.cluster import kubectl_binary, scheduling
from e2e.conftest import Installed
from securemodels.config import OperatorConfig
from support.kube import wait_for
from support.operator import FakeClock, RunningOperator

OPERATOR = "e2e-rot-operator"
MODELS = "e2e-rot-models"
CLIENTS = "e2e-rot-clients"
MODEL = "rotating"
URL = f"https://{MODEL}.{MODELS}.svc/v1/predict"
TLS = "/etc/tls/client"
STEP = timedelta(minutes=31)
ROTATIONS = 2
CERTIFICATE_ANNOTATION = "securemodels.io/certificate-sha256"
WATCH_SECONDS = 600  # an upper bound; the watch is stopped once both rotations are done


def certificate(smd: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((smd or {}).get("status") or {}).get("certificate") or {})


def serial(smd: dict[str, Any] | None) -> int | None:
    found = certificate(smd).get("serialNumber")
    return int(found, 16) if found else None


def test_clients_keep_getting_answers_across_two_rotations(
    installed: Installed, record_property: Any
) -> None:
    cluster, images = installed.cluster, installed.images
    for namespace in (OPERATOR, MODELS, CLIENTS):
        cluster.namespace(namespace)
    config = OperatorConfig(
        namespace=OPERATOR,
        watch_namespaces=(MODELS, CLIENTS),
        resync_seconds=2.0,
        sidecar_image=images["sidecar"],
        image_pull_policy="IfNotPresent",
    )
    clock = FakeClock(offset=-(STEP * ROTATIONS + timedelta(minutes=5)))
    operator = RunningOperator(cluster.kubeconfig, config, clock).start()
    watch: subprocess.Popen[str] | None = None
    try:
        cluster.apply(
            {
                "apiVersion": "securemodels.io/v1alpha1",
                "kind": "SecureModelDeployment",
                "metadata": {"name": MODEL, "namespace": MODELS},
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
                    "mtls": {
                        "certificateDuration": "24h",
                        "renewBefore": "23h30m",
                        "clients": [{"name": "caller", "namespace": CLIENTS}],
                    },
                    **({"scheduling": scheduling()} if scheduling() else {}),
                },
            }
        )
        serials = [serial(cluster.smd_ready(MODEL, MODELS))]
        cluster.pod("caller", CLIENTS, images["client"], secrets={f"{MODEL}.{MODELS}.client-caller": TLS})
        watch = subprocess.Popen(
            [
                kubectl_binary(), f"--kubeconfig={cluster.kubeconfig}", "exec", "caller", "-n", CLIENTS, "--",
                "python3", "/app/client.py", "watch", URL, "--seconds", str(WATCH_SECONDS),
                "--interval", "0.25", "--cert", f"{TLS}/tls.crt", "--key", f"{TLS}/tls.key",
                "--ca", f"{TLS}/ca.crt",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(ROTATIONS):
            clock.advance(STEP)
            renewed = wait_for(
                lambda: (found := serial(cluster.get("smd", MODEL, MODELS))) not in serials and found,
                timeout=60,
                what="a new server certificate",
            )
            serials.append(renewed)
            fingerprint = str(certificate(cluster.get("smd", MODEL, MODELS))["sha256Fingerprint"])
            wait_for(
                functools.partial(rolled_out, installed, fingerprint), timeout=180, what="the rotated pods"
            )
    finally:
        if watch is not None:
            watch.terminate()
        operator.stop()
        cluster.delete_namespaces(OPERATOR, MODELS, CLIENTS)
    assert watch is not None and watch.stdout is not None
    replies = [json.loads(line) for line in watch.stdout.read().splitlines() if line.startswith("{")]
    failures = [reply for reply in replies if reply.get("status") != 200]
    retried = [reply for reply in replies if "retried_after" in reply]
    seen = [int(reply["server_serial"], 16) for reply in replies if reply.get("server_serial")]
    record_property("rotation_requests", len(replies))
    record_property("rotation_refused_first_attempts", len(retried))
    print(f"{len(replies)} requests across {ROTATIONS} rotations; {len(retried)} refused once and retried")
    assert len(serials) == ROTATIONS + 1 and len(set(serials)) == ROTATIONS + 1, serials
    # The client saw every certificate in turn: the answers really came across both rotations.
    assert [s for s in serials if s in seen] == serials, (serials, sorted(set(seen)))
    assert replies and not failures, failures
    # A refusal while a pod is replaced is the Service's lag, and one retry covers it (the client never
    # sees a TLS failure); more than a few would mean pods go away before others are ready.
    assert len(retried) <= len(replies) // 20, retried


def rolled_out(installed: Installed, fingerprint: str) -> bool:
    """The only model pod left is one made for this certificate, and it is Ready."""
    pods = installed.cluster.items("pod", MODELS, f"app.kubernetes.io/instance={MODEL}")
    statuses = [status for pod in pods for status in pod["status"].get("containerStatuses") or []]
    return (
        len(pods) == 1
        and pods[0]["metadata"]["annotations"].get(CERTIFICATE_ANNOTATION) == fingerprint
        and not pods[0]["metadata"].get("deletionTimestamp")
        and bool(statuses)
        and all(status["ready"] for status in statuses)
    )

"""The model's data path on a node that really runs it: mTLS through the sidecar, enforced policies.

One model (the stub) is deployed by the Helm-installed operator. Its declared client calls it by DNS name
through the sidecar; everything else is refused, and each refusal is paired with a positive control in
the same test (the same pod succeeds once it is allowed), so a refusal proves the control, not a broken
network. The operator judges the pods that really run: they carry its stamp, and every control passes.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.cluster import E2ECluster, Watched, condition, controls, scheduling, use_existing_cluster
from e2e.conftest import CLIENTS, EGRESS, MODELS, MONITORING, OUTSIDERS, RESYNC_SECONDS, Installed
from nodeconfig import NODE_NAME
from securemodels.desired.controls.registry import CONTROLS as REGISTRY
from support.kube import wait_for

MODEL = "stub"
# A second model, only so that the operator's CA issues a certificate to an identity the stub does not
# admit: a genuine certificate, for the wrong client.
OTHER = "other"
URL = f"https://{MODEL}.{MODELS}.svc"
GATEWAY_TLS = "/etc/tls/gateway"
AUDITOR_TLS = "/etc/tls/auditor"
EVENTS = 10
CONTROLS = tuple(control.NAME for control in REGISTRY)
TEMPLATE_MAC_ANNOTATION = "securemodels.io/template-hmac"


@dataclass(frozen=True)
class Deployed:
    cluster: E2ECluster
    model_pod: str
    model_ip: str
    allowed_ip: str
    denied_ip: str


def model_spec(image: str, ingress_namespaces: list[str]) -> dict[str, Any]:
    return {
        "model": {"image": image, "port": 8080, "replicas": 1},
        "network": {
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}]}
                for name in ingress_namespaces
            ],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": EGRESS}},
                            "podSelector": {"matchLabels": {"app": "allowed"}},
                        }
                    ],
                    "ports": [{"port": 8080}],
                }
            ],
        },
        "mtls": {"clients": [{"name": "gateway", "namespace": CLIENTS}]},
    }


def smd(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    placed = {"scheduling": scheduling()} if scheduling() else {}
    return {
        "apiVersion": "securemodels.io/v1alpha1",
        "kind": "SecureModelDeployment",
        "metadata": {"name": name, "namespace": MODELS},
        "spec": {**spec, **placed},
    }


def tls(directory: str) -> list[str]:
    return ["--cert", f"{directory}/tls.crt", "--key", f"{directory}/tls.key", "--ca", f"{directory}/ca.crt"]


@pytest.fixture(scope="module")
def deployed(installed: Installed) -> Iterator[Deployed]:
    cluster, images = installed.cluster, installed.images
    other = model_spec(images["modelstub"], [])
    other["mtls"] = {"clients": [{"name": "auditor", "namespace": CLIENTS}]}
    cluster.apply(smd(MODEL, model_spec(images["modelstub"], [CLIENTS])), smd(OTHER, other))
    cluster.smd_ready(MODEL, MODELS)
    (model_pod,) = wait_for(lambda: cluster.model_pods(MODEL, MODELS), timeout=60, what="the model pod")
    stub_server = {"SECUREMODELS_BIND_ADDRESS": "0.0.0.0", "SECUREMODELS_PORT": "8080"}  # noqa: S104 - in a pod
    allowed = cluster.pod("allowed", EGRESS, images["modelstub"], env=stub_server)
    denied = cluster.pod("denied", EGRESS, images["modelstub"], env=stub_server)
    secrets = {
        f"{MODEL}.{MODELS}.client-gateway": GATEWAY_TLS,
        f"{OTHER}.{MODELS}.client-auditor": AUDITOR_TLS,
    }
    cluster.pod("gateway", CLIENTS, images["client"], secrets=secrets)
    cluster.pod("outsider", OUTSIDERS, images["client"])
    yield Deployed(
        cluster,
        model_pod["metadata"]["name"],
        model_pod["status"]["podIP"],
        allowed["status"]["podIP"],
        denied["status"]["podIP"],
    )
    cluster("delete", "smd", MODEL, OTHER, "-n", MODELS, "--wait=false")


def gateway_get(cluster: E2ECluster, path: str = "/v1/predict", *options: str) -> dict[str, Any]:
    return cluster.client("gateway", CLIENTS, "get", URL + path, *options)


def test_model_pod_runs_hardened_on_the_real_node(deployed: Deployed) -> None:
    cluster = deployed.cluster
    pod = cluster.get("pod", deployed.model_pod, MODELS)
    assert pod is not None
    assert {status["name"] for status in pod["status"]["containerStatuses"]} == {"model", "mtls-proxy"}
    assert all(status["ready"] for status in pod["status"]["containerStatuses"])
    # Checked inside the containers, from what the kernel reports, not from the spec.
    sidecar = cluster.exec_json(
        deployed.model_pod, MODELS, "python3", "-c",
        "import json, os, pathlib\n"
        "nginx = [p for p in pathlib.Path('/proc').iterdir() if p.name.isdigit() and "
        "(p / 'comm').read_text().strip() == 'nginx']\n"
        "uids = sorted({int(l.split()[1]) for p in nginx for l in (p / 'status').read_text().splitlines() "
        "if l.startswith('Uid:')})\n"
        "root = [l.split()[3] for l in open('/proc/self/mounts') if l.split()[1] == '/'][0]\n"
        "try:\n    open('/written', 'w'); writable = True\nexcept OSError:\n    writable = False\n"
        "print(json.dumps({'nginx_uids': uids, 'root_options': root.split(','), 'root_writable': writable}))",
        container="mtls-proxy",
    )  # fmt: skip
    assert sidecar["nginx_uids"] == [65532], sidecar
    assert "ro" in sidecar["root_options"] and sidecar["root_writable"] is False, sidecar
    model = cluster.exec_json(
        deployed.model_pod, MODELS, "python3", "-c",
        "import json, os\n"
        "listening = [l.split()[1] for l in open('/proc/net/tcp').readlines()[1:] if l.split()[3] == '0A']\n"
        "token = os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token')\n"
        "mounts = [l.split()[1] for l in open('/proc/self/mounts') if 'serviceaccount' in l]\n"
        "print(json.dumps({'listening': listening, 'token': token, 'token_mounts': mounts}))",
        container="model",
    )  # fmt: skip
    # 0100007F:1F90 is 127.0.0.1:8080 as /proc/net/tcp writes it; the sidecar's ports share the netns.
    assert "0100007F:1F90" in model["listening"], model
    assert not any(address.endswith(":1F90") and address != "0100007F:1F90" for address in model["listening"])
    assert model["token"] is False and model["token_mounts"] == [], model


def test_model_is_compliant_judged_on_its_running_pods(deployed: Deployed) -> None:
    """Positive proof of the judging: the operator compares the pods that really run with the pod spec
    it stamped on their template, and finds them as written; every control passes."""
    cluster = deployed.cluster
    found = cluster.get("smd", MODEL, MODELS)
    assert found is not None
    verdicts = {item["name"]: item for item in controls(found)}
    assert sorted(verdicts) == sorted(CONTROLS), verdicts
    assert all(item["status"] == "Pass" for item in verdicts.values()), verdicts
    compliant = condition(found, "Compliant")
    assert compliant.get("status") == "True" and found["status"]["compliant"] is True, compliant
    assert found["status"]["observedGeneration"] == found["metadata"]["generation"], found["status"]
    pod = cluster.get("pod", deployed.model_pod, MODELS)
    deployment = cluster.get("deployment", MODEL, MODELS)
    assert pod is not None and deployment is not None
    stamp = deployment["spec"]["template"]["metadata"]["annotations"][TEMPLATE_MAC_ANNOTATION]
    assert pod["metadata"]["annotations"].get(TEMPLATE_MAC_ANNOTATION) == stamp, pod["metadata"]
    assert pod["status"]["phase"] == "Running", pod["status"]
    # Placed by the SMD's spec.scheduling, which the template carries, not by admission.
    placement = scheduling()
    assert pod["spec"].get("nodeSelector") == placement.get("nodeSelector"), pod["spec"]
    assert deployment["spec"]["template"]["spec"].get("tolerations") == placement.get("tolerations")
    if not use_existing_cluster():
        assert pod["spec"]["nodeName"] == NODE_NAME, pod["spec"]


def test_declared_client_gets_answers_by_dns_name(deployed: Deployed) -> None:
    reply = gateway_get(deployed.cluster, "/v1/predict", *tls(GATEWAY_TLS))
    assert reply.get("status") == 200, reply
    assert '"client": "gateway.e2e-clients"' in reply["body"], reply


def test_stream_arrives_event_by_event(deployed: Deployed) -> None:
    reply = deployed.cluster.client(
        "gateway", CLIENTS, "stream", f"{URL}/v1/stream?events={EVENTS}", *tls(GATEWAY_TLS)
    )
    assert reply.get("status") == 200, reply
    arrivals = [event["at"] for event in reply["events"]]
    assert [event["data"]["n"] for event in reply["events"]] == list(range(EVENTS))
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # The stub sends one event every 100 ms: a buffered response would arrive all at once.
    assert arrivals[-1] - arrivals[0] >= 0.7, arrivals
    assert 0.05 <= statistics.median(gaps) <= 0.3, gaps


def test_no_client_certificate_is_refused(deployed: Deployed) -> None:
    refused = gateway_get(deployed.cluster, "/v1/predict", "--ca", f"{GATEWAY_TLS}/ca.crt")
    # nginx finishes the handshake and answers 400 itself, or the TLS layer fails: either way, no answer
    # from the model.
    assert refused.get("stage") == "tls" or (
        refused.get("status") == 400 and "client certificate required" in refused.get("body", "")
    ), refused
    assert gateway_get(deployed.cluster, "/v1/predict", *tls(GATEWAY_TLS)).get("status") == 200


def test_certificate_of_an_undeclared_identity_is_forbidden(deployed: Deployed) -> None:
    forbidden = gateway_get(deployed.cluster, "/v1/predict", *tls(AUDITOR_TLS))
    assert forbidden.get("status") == 403, forbidden
    assert gateway_get(deployed.cluster, "/v1/predict", *tls(GATEWAY_TLS)).get("status") == 200


def test_undeclared_namespace_cannot_connect_until_declared(deployed: Deployed, installed: Installed) -> None:
    cluster = deployed.cluster
    assert cluster.tcp("outsider", OUTSIDERS, f"{MODEL}.{MODELS}.svc", 443) != "open"
    # Positive control: the same pod connects once the SMD admits its namespace.
    cluster.apply(smd(MODEL, model_spec(installed.images["modelstub"], [CLIENTS, OUTSIDERS])))
    try:
        wait_for(
            lambda: cluster.tcp("outsider", OUTSIDERS, f"{MODEL}.{MODELS}.svc", 443) == "open",
            timeout=60,
            what="the outsider to be admitted",
        )
    finally:
        cluster.apply(smd(MODEL, model_spec(installed.images["modelstub"], [CLIENTS])))
    wait_for(
        lambda: cluster.tcp("outsider", OUTSIDERS, f"{MODEL}.{MODELS}.svc", 443) != "open",
        timeout=60,
        what="the outsider to be refused again",
    )


def test_model_port_is_unreachable_from_other_pods(deployed: Deployed) -> None:
    cluster = deployed.cluster
    for pod, namespace in (("gateway", CLIENTS), ("outsider", OUTSIDERS), ("denied", EGRESS)):
        assert cluster.tcp(pod, namespace, deployed.model_ip, 8080) != "open", (pod, namespace)
    # Positive controls: the model serves on its port inside the pod, and the TLS port is reachable.
    assert cluster.tcp(deployed.model_pod, MODELS, "127.0.0.1", 8080, container="model") == "open"
    assert cluster.tcp("gateway", CLIENTS, deployed.model_ip, 8443) == "open"


def test_model_resolves_dns_and_reaches_only_declared_egress(deployed: Deployed) -> None:
    cluster = deployed.cluster
    for name in (f"{MODEL}.{MODELS}.svc.cluster.local", "kubernetes.default.svc.cluster.local"):
        resolved = cluster.client(deployed.model_pod, MODELS, "dns", name, container="model")
        assert resolved.get("addresses"), (name, resolved)
    assert cluster.tcp(deployed.model_pod, MODELS, deployed.allowed_ip, 8080, container="model") == "open"
    assert cluster.tcp(deployed.model_pod, MODELS, deployed.denied_ip, 8080, container="model") != "open"
    # Positive control: the undeclared destination serves; only the model's policy keeps it away.
    assert cluster.tcp("gateway", CLIENTS, deployed.denied_ip, 8080) == "open"


def network_verdict(smd: dict[str, Any] | None) -> dict[str, Any]:
    return next((item for item in controls(smd) if item["name"] == "network-isolation"), {})


def drift_corrections(installed: Installed, kind: str) -> float:
    """securemodels_drift_corrections_total for one kind, from the leading replica (the one that
    repairs), scraped from the monitoring namespace."""
    cluster = installed.cluster
    cluster.pod("scraper", MONITORING, installed.images["client"])
    address = installed.leader()["status"]["podIP"]
    metrics = cluster.client("scraper", MONITORING, "get", f"http://{address}:8080/metrics")
    assert metrics.get("status") == 200, metrics
    series = f'securemodels_drift_corrections_total{{kind="{kind}"}} '
    return sum(float(line.split()[-1]) for line in metrics["body"].splitlines() if line.startswith(series))


def first(events: list[Watched], wanted: Any) -> Watched | None:
    return next((event for event in list(events) if wanted(event)), None)


def test_deleted_network_policy_is_restored_and_reported(
    deployed: Deployed, installed: Installed, record_property: Any
) -> None:
    """Restored from the watch, reported as drift (the control Fails, an Event, the metric) until the
    next resync, then Compliant again. How fast goes to the notes, not into an assertion."""
    cluster = deployed.cluster
    policy = f"{MODEL}-network"
    before = cluster.get("networkpolicy", policy, MODELS)
    assert before is not None
    assert cluster.tcp("outsider", OUTSIDERS, deployed.model_ip, 8443) != "open"
    corrections = drift_corrections(installed, "NetworkPolicy")
    earlier_events = {item["metadata"]["uid"] for item in cluster.events(MODELS, MODEL, "ControlFail")}
    with (
        cluster.watch("networkpolicy", policy, MODELS) as policies,
        cluster.watch("smd", MODEL, MODELS) as verdicts,
    ):
        wait_for(lambda: policies and verdicts, timeout=30, what="the watches to start")
        cluster("delete", "networkpolicy", policy, "-n", MODELS, "--wait=false")
        deleted = wait_for(
            lambda: first(policies, lambda event: event.type == "DELETED"), timeout=30, what="the deletion"
        )
        restored = wait_for(
            lambda: first(
                policies,
                lambda event: (
                    event.type != "DELETED" and event.object["metadata"]["uid"] != before["metadata"]["uid"]
                ),
            ),
            timeout=RESYNC_SECONDS * 2,
            what="the policy to be restored",
        )
        failed = wait_for(
            lambda: first(verdicts, lambda event: network_verdict(event.object).get("status") == "Fail"),
            timeout=60,
            what="network-isolation to report Fail",
        )
        wait_for(
            lambda: cluster.tcp("outsider", OUTSIDERS, deployed.model_ip, 8443, timeout=1) != "open",
            timeout=60,
            what="the outsider to be blocked again",
        )
        blocked = time.monotonic() - deleted.at
        # Positive control: the declared client still gets through the restored policy.
        assert gateway_get(cluster, "/v1/predict", *tls(GATEWAY_TLS)).get("status") == 200
        # The verdict stands until the next resync, then the SMD is judged afresh: compliant again.
        passed = wait_for(
            lambda: first(
                verdicts,
                lambda event: (
                    event.at > failed.at and condition(event.object, "Compliant").get("status") == "True"
                ),
            ),
            timeout=RESYNC_SECONDS * 2 + 30,
            what="the SMD to be compliant again",
        )
    message = network_verdict(failed.object)["message"]
    assert policy in message and "deleted" in message, message
    assert condition(failed.object, "Compliant").get("status") == "False", failed.object["status"]
    posted = [
        item
        for item in cluster.events(MODELS, MODEL, "ControlFail")
        if item["metadata"]["uid"] not in earlier_events
        and item["message"].startswith("network-isolation:")
        and policy in item["message"]
    ]
    assert [item["type"] for item in posted] == ["Warning"], posted
    assert drift_corrections(installed, "NetworkPolicy") >= corrections + 1
    assert all(item["status"] == "Pass" for item in controls(passed.object)), controls(passed.object)
    timings = {
        "policy_restored_seconds": restored.at - deleted.at,
        "fail_reported_seconds": failed.at - deleted.at,
        "outsider_blocked_again_seconds": blocked,
        "fail_held_seconds": passed.at - failed.at,
    }
    for name, seconds in timings.items():
        record_property(name, round(seconds, 2))
    print(", ".join(f"{name} {seconds:.2f}" for name, seconds in timings.items()))


def test_quarantine_cuts_the_running_model_off_keeps_its_pod_and_lifting_lets_the_client_back(
    deployed: Deployed,
) -> None:
    """Last in the module: it quarantines the model, then lifts the quarantine again."""
    cluster = deployed.cluster
    assert gateway_get(cluster, "/v1/predict", *tls(GATEWAY_TLS)).get("status") == 200
    before = cluster.get("pod", deployed.model_pod, MODELS)
    assert before is not None
    quarantine = json.dumps({"spec": {"quarantine": {"reason": "INC-4711"}}})
    cluster("patch", "smd", MODEL, "-n", MODELS, "--type=merge", "-p", quarantine)
    try:
        wait_for(
            lambda: (cluster.get("smd", MODEL, MODELS) or {}).get("status", {}).get("phase") == "Quarantined",
            timeout=60,
            what="Quarantined",
        )
        # The enforcer drops the declared client's traffic, and the model's own, DNS included.
        wait_for(
            lambda: cluster.tcp("gateway", CLIENTS, deployed.model_ip, 8443, timeout=1) != "open",
            timeout=60,
            what="the declared client cut off",
        )
        assert cluster.tcp(deployed.model_pod, MODELS, deployed.allowed_ip, 8080, container="model") != "open"
        resolved = cluster.client(
            deployed.model_pod, MODELS, "dns", "kubernetes.default.svc.cluster.local", container="model"
        )
        assert not resolved.get("addresses"), resolved
        # The running sidecar is told to refuse every client, without a restart: the kubelet brings the file.
        flag = ["exec", deployed.model_pod, "-n", MODELS, "-c", "mtls-proxy", "--"]
        wait_for(
            lambda: cluster.run(*flag, "cat", "/etc/securemodels/nginx/quarantined").stdout == "INC-4711",
            timeout=180,
            interval=2,
            what="the flag file in the running sidecar",
        )
    finally:
        cluster("patch", "smd", MODEL, "-n", MODELS, "--type=merge", "-p", '{"spec":{"quarantine":null}}')

    wait_for(
        lambda: gateway_get(cluster, "/v1/predict", *tls(GATEWAY_TLS)).get("status") == 200,
        timeout=180,
        interval=2,
        what="the declared client served again",
    )
    after = cluster.get("pod", deployed.model_pod, MODELS)
    assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
    restarts = [status["restartCount"] for status in after["status"]["containerStatuses"]]
    assert restarts == [status["restartCount"] for status in before["status"]["containerStatuses"]]

"""The operator as users install it: the chart, the image built from this checkout, a node that runs it.

Every replica must become Ready under the chart's own RBAC (its readiness checks every permission it
needs) and with the chart's NetworkPolicy enforced: only the monitoring namespace reaches its port.
Exactly one replica, the holder of the leader Lease, leads.
"""

from __future__ import annotations

from e2e.conftest import MONITORING, OUTSIDERS, Installed


def test_operator_is_ready_as_non_root_on_a_read_only_root(installed: Installed) -> None:
    for pod in installed.operator_pods():
        assert all(status["ready"] for status in pod["status"]["containerStatuses"]), pod["status"]
        seen = installed.cluster.exec_json(
            pod["metadata"]["name"], installed.operator_namespace, "python3", "-c",
            "import json, os, urllib.request\n"
            "ready = urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=5).status\n"
            "root = [l.split()[3] for l in open('/proc/self/mounts') if l.split()[1] == '/'][0]\n"
            "print(json.dumps({'uid': os.getuid(), 'root': root.split(','), 'ready': ready}))",
        )  # fmt: skip
        assert seen == {"uid": 65532, "root": seen["root"], "ready": 200}, seen
        assert "ro" in seen["root"], seen


def leading(metrics: str) -> float:
    """securemodels_leader as one replica reports it."""
    return sum(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("securemodels_leader ")
    )


def test_operator_network_policy_admits_only_monitoring(installed: Installed) -> None:
    cluster, images = installed.cluster, installed.images
    cluster.pod("scraper", MONITORING, images["client"])
    cluster.pod("prober", OUTSIDERS, images["client"])
    leader = installed.leader()["metadata"]["name"]
    for pod in installed.operator_pods():
        address = pod["status"]["podIP"]
        assert cluster.tcp("prober", OUTSIDERS, address, 8080) != "open"
        # Positive control: the port serves, to the namespace the chart admits.
        assert cluster.tcp("scraper", MONITORING, address, 8080) == "open"
        metrics = cluster.client("scraper", MONITORING, "get", f"http://{address}:8080/metrics")
        assert metrics.get("status") == 200 and "securemodels_" in metrics["body"], metrics
        # Only the holder of the Lease leads.
        assert leading(metrics["body"]) == (1 if pod["metadata"]["name"] == leader else 0), pod["metadata"]

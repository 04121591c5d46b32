"""The cluster the end-to-end tests run on, and what they do in it: kubectl, pods, probes from pods.

Either the local cluster with its real node (the default), or any cluster in the current kubeconfig with
USE_EXISTING_CLUSTER=1 (kind, say): the tests only use kubectl, helm and the images named in
$SECUREMODELS_IMAGES, so they run unchanged on both.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from nodeconfig import PLACEMENT_KEY, model_scheduling
from support.kube import wait_for

# Namespaces labelled so get their pods, other than the operator's models, onto the local real node
# (nodeconfig.placement_policy); the models get there by their SMD's spec.scheduling (scheduling()).
PLACEMENT_LABEL = PLACEMENT_KEY
POD_READY_TIMEOUT = 120.0


def use_existing_cluster() -> bool:
    return os.environ.get("USE_EXISTING_CLUSTER", "") in ("1", "true")


def scheduling() -> dict[str, Any]:
    """The spec.scheduling of every SMD the suite creates: on the local cluster, the real node's
    toleration and name (the only node that runs pods); on an existing cluster, nothing."""
    return {} if use_existing_cluster() else model_scheduling()


def kubectl_binary() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def images() -> dict[str, str]:
    """Image name -> reference by digest, from the manifest hack/images/build.sh (or `make kind-e2e`)
    wrote."""
    path = os.environ.get("SECUREMODELS_IMAGES")
    if not path:
        raise RuntimeError(
            "SECUREMODELS_IMAGES is not set: run the suite with `make test` or `make kind-e2e`"
        )
    return {name: entry["reference"] for name, entry in json.loads(Path(path).read_text()).items()}


@dataclass(frozen=True)
class E2ECluster:
    kubeconfig: Path

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result.stdout

    def apply(self, *manifests: dict[str, Any]) -> None:
        self("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(manifests))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-o", "json", *(["-n", namespace] if namespace else []))
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return dict(json.loads(result.stdout))

    def items(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(json.loads(self("get", kind, "-n", namespace, "-l", selector, "-o", "json"))["items"])

    def namespace(self, name: str, **labels: str) -> None:
        """A namespace enforcing Pod Security "restricted", whose pods are placed on the real node."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                        PLACEMENT_LABEL: "true",
                        **labels,
                    },
                },
            }
        )

    def delete_namespaces(self, *names: str) -> None:
        self("delete", "namespace", *names, "--ignore-not-found", "--wait=false")

    def pod(
        self,
        name: str,
        namespace: str,
        image: str,
        *,
        labels: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A restricted pod, Running and Ready; `secrets` maps Secret names to mount directories."""
        mounts = [
            {"name": f"s{index}", "mountPath": path, "readOnly": True}
            for index, path in enumerate((secrets or {}).values())
        ]
        volumes = [
            {"name": f"s{index}", "secret": {"secretName": secret}}
            for index, secret in enumerate(secrets or {})
        ]
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": key, "value": value} for key, value in (env or {}).items()],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            }
        )
        return self.wait_pod_ready(name, namespace)

    def wait_pod_ready(self, name: str, namespace: str, timeout: float = POD_READY_TIMEOUT) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            pod = self.get("pod", name, namespace)
            conditions = ((pod or {}).get("status") or {}).get("conditions") or []
            return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

        return wait_for(ready, timeout=timeout, what=f"pod {namespace}/{name} to be Ready")

    def exec_json(
        self, pod: str, namespace: str, *command: str, container: str | None = None, timeout: float = 120
    ) -> Any:
        """Run `command` in the pod; it prints one JSON document (client.py), returned parsed."""
        result = self.run(
            "exec",
            pod,
            "-n",
            namespace,
            *(["-c", container] if container else []),
            "--",
            *command,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"exec in {namespace}/{pod} failed: {result.stderr or result.stdout}")
        return json.loads(result.stdout)

    def client(
        self, pod: str, namespace: str, *arguments: str, container: str | None = None
    ) -> dict[str, Any]:
        """client.py in a pod (the client image, or the model stub's image which carries it too)."""
        return dict(
            self.exec_json(pod, namespace, "python3", "/app/client.py", *arguments, container=container)
        )

    def tcp(
        self,
        pod: str,
        namespace: str,
        host: str,
        port: int,
        *,
        container: str | None = None,
        timeout: float = 2.0,
    ) -> str:
        """open, refused or timeout: a connection dropped by a NetworkPolicy times out."""
        return str(
            self.client(
                pod, namespace, "tcp", host, str(port), "--timeout", str(timeout), container=container
            )["result"]
        )

    def smd_ready(self, name: str, namespace: str, timeout: float = 180) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            found = self.get("smd", name, namespace)
            conditions = ((found or {}).get("status") or {}).get("conditions") or []
            return found if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

        try:
            return wait_for(ready, timeout=timeout, what=f"SMD {namespace}/{name} to be Ready")
        except AssertionError as error:
            pods = self.run("get", "pods", "-n", namespace, "-o", "wide").stdout
            verdicts = "\n".join(
                f"{item['name']}: {item['status']} {item.get('reason', '')}: {item.get('message', '')}"
                for item in controls(self.get("smd", name, namespace))
            )
            raise AssertionError(f"{error}\npods:\n{pods}\ncontrols:\n{verdicts}") from error

    def events(self, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
        """The Events about the object called `name` in `namespace` with this reason."""
        selector = f"involvedObject.name={name},reason={reason}"
        return self.items_by_fields("event", namespace, selector)

    def items_by_fields(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self("get", kind, "-n", namespace, "--field-selector", selector, "-o", "json")
        return list(json.loads(found)["items"])

    @contextlib.contextmanager
    def watch(self, kind: str, name: str, namespace: str) -> Iterator[list[Watched]]:
        """Every change of one object while the block runs, as the API server's watch delivers them,
        each with the moment it arrived: a state that lasts a moment is seen too. The first entry is
        the object as it was when the watch started (type ADDED), or nothing when it did not exist."""
        process = subprocess.Popen(
            [
                kubectl_binary(), f"--kubeconfig={self.kubeconfig}", "get", kind, name, "-n", namespace,
                "--watch", "--output-watch-events", "-o", "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        seen: list[Watched] = []
        assert process.stdout is not None
        reader = threading.Thread(target=_collect, args=(process.stdout, seen), daemon=True)
        reader.start()
        try:
            yield seen
        finally:
            process.terminate()
            process.wait(timeout=10)
            reader.join(timeout=10)

    def model_pods(self, name: str, namespace: str) -> list[dict[str, Any]]:
        return [
            pod
            for pod in self.items("pod", namespace, f"app.kubernetes.io/instance={name}")
            if not pod["metadata"].get("deletionTimestamp") and pod["status"].get("phase") == "Running"
        ]

    def api_server_endpoint(self) -> tuple[str, int]:
        """Where pods reach the API server: the `kubernetes` Service's endpoint, as the chart's
        NetworkPolicy must name it (policies see the translated address)."""
        slices = json.loads(
            self(
                "get",
                "endpointslices",
                "-n",
                "default",
                "-l",
                "kubernetes.io/service-name=kubernetes",
                "-o",
                "json",
            )
        )["items"]
        endpoint = slices[0]
        return endpoint["endpoints"][0]["addresses"][0], int(endpoint["ports"][0]["port"])


@dataclass(frozen=True)
class Watched:
    """One watch event: when it arrived (time.monotonic()), ADDED, MODIFIED or DELETED, the object."""

    at: float
    type: str
    object: dict[str, Any]


def _collect(stream: IO[str], seen: list[Watched]) -> None:
    """kubectl prints each watch event as a JSON document, on one line (or indented, over several)."""
    document = ""
    for line in stream:
        document += line
        try:
            event = json.loads(document)
        except json.JSONDecodeError:
            continue  # not complete yet
        document = ""
        seen.append(Watched(time.monotonic(), str(event["type"]), dict(event["object"])))


def controls(smd: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An SMD's per-control verdicts, as its status holds them."""
    return list(((smd or {}).get("status") or {}).get("controls") or [])


def condition(smd: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """One condition of an SMD's status; empty when it has none of that type."""
    found = ((smd or {}).get("status") or {}).get("conditions") or []
    return next((dict(item) for item in found if item["type"] == kind), {})

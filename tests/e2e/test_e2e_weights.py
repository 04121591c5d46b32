"""Signed weights on a node that really runs them: the weights image is mounted as an image volume, the
operator's own image verifies it in the init container before the model starts, and the SMD's status
shows the manifest and key the pod verified. The same weights with one byte changed after signing never
serve: the verifier refuses them, naming the file, and the model container never starts.

The weights images and their signer's public key come from hack/images/build.sh (weights,
weights-tampered; the manifest names the key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import scheduling
from e2e.conftest import MODELS, Installed
from securemodels.desired.controls import weights
from support.kube import wait_for

KEY_CONFIG_MAP = "e2e-weights-signer"


def public_key() -> str:
    """The weights' signer, as the images manifest names it (hack/images/build.sh, hack/kind/images.sh)."""
    manifest = json.loads(Path(os.environ["SECUREMODELS_IMAGES"]).read_text())
    if "public_key" not in manifest.get("weights", {}):
        pytest.fail("the images manifest has no signed weights: build the images with hack/images/build.sh")
    return Path(manifest["weights"]["public_key"]).read_text()


def signed_model(name: str, image: str, weights_image: str) -> dict[str, Any]:
    return {
        "apiVersion": "securemodels.io/v1alpha1",
        "kind": "SecureModelDeployment",
        "metadata": {"name": name, "namespace": MODELS},
        "spec": {
            "model": {
                "image": image,
                "replicas": 1,
                "weights": {
                    "image": weights_image,
                    "signature": {"publicKey": {"name": KEY_CONFIG_MAP, "key": "signer.pub"}},
                },
            },
            **({"scheduling": scheduling()} if scheduling() else {}),
        },
    }


def verifier_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    return next((item for item in statuses if item["name"] == weights.VERIFIER_CONTAINER), {})


def verifier_exit(pod: dict[str, Any]) -> int | None:
    """The verifier's exit code: of its last run, or of the one before while the kubelet restarts it."""
    status = verifier_status(pod)
    for key in ("state", "lastState"):
        terminated = (status.get(key) or {}).get("terminated")
        if terminated:
            return int(terminated["exitCode"])
    return None


def control(smd: dict[str, Any] | None) -> dict[str, Any]:
    found = ((smd or {}).get("status") or {}).get("controls") or []
    return next((item for item in found if item["name"] == weights.NAME), {})


def test_signed_weights_mount_verify_and_serve_and_tampered_ones_never_start(installed: Installed) -> None:
    cluster, images = installed.cluster, installed.images
    pem = public_key()
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": KEY_CONFIG_MAP, "namespace": MODELS},
            "data": {"signer.pub": pem},
        },
        signed_model("signed-weights", images["modelstub"], images["weights"]),
        signed_model("tampered-weights", images["modelstub"], images["weights-tampered"]),
    )
    try:
        ready = cluster.smd_ready("signed-weights", MODELS)
        (pod,) = [
            item
            for item in cluster.items("pod", MODELS, "app.kubernetes.io/instance=signed-weights")
            if not item["metadata"].get("deletionTimestamp")
        ]
        terminated = verifier_status(pod)["state"]["terminated"]
        assert terminated["exitCode"] == 0
        report = json.loads(terminated["message"])
        der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))
        assert report[weights.SIGNER_FIELD] == hashlib.sha256(der).hexdigest()
        assert report[weights.TRUST_FIELD] == hashlib.sha256(pem.encode()).hexdigest()
        assert ready["status"]["weights"] == {
            "source": images["weights"],
            "manifestSha256": report[weights.MANIFEST_FIELD],
            "signerKeySha256": report[weights.SIGNER_FIELD],
        }
        assert control(ready)["status"] == "Pass" and control(ready)["reason"] == "SignatureVerified"
        # The weights really are in the model container, read-only, where the model looks for them.
        listing = cluster("exec", pod["metadata"]["name"], "-n", MODELS, "-c", "model", "--",
                          "python3", "-c", "import os; print(sorted(os.listdir('/weights')))")  # fmt: skip
        assert "model-00001-of-00001.safetensors" in listing and "model.sig" in listing
        write = cluster.run("exec", pod["metadata"]["name"], "-n", MODELS, "-c", "model", "--",
                            "python3", "-c", "open('/weights/config.json', 'a').write('x')")  # fmt: skip
        assert write.returncode != 0 and "Read-only file system" in write.stderr

        def refused() -> dict[str, Any] | None:
            found = control(cluster.get("smd", "tampered-weights", MODELS))
            return found if found.get("reason") == "VerificationFailed" else None

        failed = wait_for(refused, timeout=180, what="the tampered weights refused")
        assert "Hash mismatch for 'model-00001-of-00001.safetensors'" in failed["message"]
        tampered = cluster.items("pod", MODELS, "app.kubernetes.io/instance=tampered-weights")
        assert tampered
        for item in tampered:
            assert verifier_exit(item) not in (None, 0)
            containers = item["status"].get("containerStatuses") or []
            models = [entry for entry in containers if entry["name"] == "model"]
            assert all("running" not in entry["state"] for entry in models), models
            assert not any(entry.get("ready") for entry in item["status"].get("containerStatuses") or [])
        status = (cluster.get("smd", "tampered-weights", MODELS) or {})["status"]
        assert status["phase"] != "Ready"
        assert "manifestSha256" not in status.get("weights", {})
    finally:
        cluster.run("delete", "smd", "signed-weights", "tampered-weights", "-n", MODELS, "--wait=false")
        cluster.run("delete", "configmap", KEY_CONFIG_MAP, "-n", MODELS)

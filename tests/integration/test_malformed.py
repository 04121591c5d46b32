"""A malformed SMD never crashes the reconciler or makes it loop.

The API server cannot store a spec that breaks the schema, so the reconciler is handed a corrupted copy
of a real SMD; its status write and Event go to the real API server. No operator runs in this module, so
nothing else writes to the object meanwhile.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from localcluster import LocalCluster
from securemodels import metrics
from securemodels.config import OperatorConfig
from securemodels.handlers.reconcile import Reconciler
from securemodels.k8s.client import Kube, load_config
from support.kube import Kubectl, wait_for
from support.manifests import smd
from support.paths import OPERATOR_NAMESPACE

pytestmark = pytest.mark.integration


def status_writes() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "securemodels_api_writes_total", {"verb": "patch_status", "kind": "SecureModelDeployment"}
    )
    return value or 0.0


def test_a_malformed_spec_is_reported_once_and_not_retried_hot(
    kubectl: Kubectl, namespace: str, cluster: LocalCluster
) -> None:
    kubectl.apply(smd("odd", namespace))
    live: dict[str, Any] = wait_for(lambda: kubectl.get("smd", "odd", namespace), what="odd stored")
    corrupted = {**live, "spec": {"model": {"image": 42, "port": "eighty"}}}

    async def reconcile(body: dict[str, Any]) -> str:
        kube = Kube(load_config(Path(cluster.kubeconfig)))
        try:
            reconciler = Reconciler(
                kube, OperatorConfig(namespace=OPERATOR_NAMESPACE), lambda: datetime.now(UTC)
            )
            return (await reconciler.reconcile(body)).phase
        finally:
            await kube.close()

    before = status_writes()
    first = asyncio.run(reconcile(corrupted))
    stored = kubectl.get("smd", "odd", namespace)
    second = asyncio.run(reconcile({**corrupted, "status": stored["status"]}))

    assert (first, second) == ("Blocked", "Blocked")
    assert status_writes() - before == 1  # the second pass found nothing new to say
    ready = kubectl.condition(kubectl.get("smd", "odd", namespace), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.model.image" in ready["message"]
    assert "spec.model.port" in ready["message"]
    events = [item for item in kubectl.items("event", namespace) if item["reason"] == "InvalidSpec"]
    assert len(events) == 1
    assert kubectl.get("deployment", "odd", namespace) is None

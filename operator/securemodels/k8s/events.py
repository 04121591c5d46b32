"""Kubernetes Events: few, meaningful, and never carrying key material."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from securemodels.api import v1alpha1
from securemodels.desired.model import rfc3339
from securemodels.desired.naming import MANAGED_BY, Owner
from securemodels.k8s.client import Kube, KubeError

log = logging.getLogger(__name__)
COMPONENT = MANAGED_BY


def about_smd(owner: Owner) -> dict[str, str]:
    return {
        "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
        "kind": v1alpha1.KIND,
        "name": owner.name,
        "namespace": owner.namespace,
        "uid": owner.uid,
    }


def about(item: Mapping[str, Any]) -> dict[str, str]:
    metadata = item["metadata"]
    return {
        "apiVersion": item["apiVersion"],
        "kind": item["kind"],
        "name": metadata["name"],
        "namespace": metadata.get("namespace", ""),
        "uid": metadata.get("uid", ""),
    }


async def post(
    kube: Kube, involved: Mapping[str, str], event_type: str, reason: str, message: str, now: datetime
) -> None:
    """Best effort: a lost Event must never fail a reconcile."""
    timestamp = rfc3339(now)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
        "involvedObject": dict(involved),
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }
    log.info("event %s %s %s/%s: %s", event_type, reason, involved["namespace"], involved["name"], message)
    try:
        await kube.create(event)
    except KubeError as error:
        log.warning(
            "could not post event %s on %s/%s: %s", reason, involved["namespace"], involved["name"], error
        )

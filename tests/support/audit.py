"""What the API server's audit log says an identity wrote (hack/localcluster.py logs every write, and
every request of a service account, at Metadata level)."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
ACCESS_REVIEWS = ("selfsubjectaccessreviews", "subjectaccessreviews")


def accepted_writes(
    audit_log: Path, identities: Collection[str], *, not_of: Collection[str] = ACCESS_REVIEWS
) -> list[dict[str, Any]]:
    """Every write the API server accepted from the identities, dry runs and the resources `not_of`
    left out, oldest first."""
    found = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if (
            event.get("user", {}).get("username") not in identities
            or event.get("stage") != "ResponseComplete"
        ):
            continue
        if event["verb"] not in WRITE_VERBS or "dryRun" in event.get("requestURI", ""):
            continue
        if event["objectRef"].get("resource") in not_of:
            continue
        if event.get("responseStatus", {}).get("code", 200) >= 300:
            continue
        found.append(event)
    return sorted(found, key=lambda event: event["requestReceivedTimestamp"])

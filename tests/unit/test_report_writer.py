"""The report writer against an API server held in memory: what it writes, when it writes nothing, and
what it never touches."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from datetime import datetime
from typing import Any, cast

import pytest

from securemodels.config import OperatorConfig
from securemodels.desired import naming, reports
from securemodels.handlers.reports import ReportWriter
from securemodels.k8s import cache
from securemodels.k8s.client import Kube, KubeError
from unit.builders import NOW
from unit.test_reconcile import MemoryKube

KEY = b"s" * 32
NAMESPACE = "ml-prod"
REPORT_KEY = ("PolicyReport", NAMESPACE, reports.NAME)


def smd(name: str, verdict: str = "Pass") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"},
        "status": {
            "controls": [{"name": "mtls", "status": verdict, "reason": "R", "message": "m"}],
            "conditions": [{"type": "MTLSReady", "lastTransitionTime": "2026-02-01T10:00:00Z"}],
        },
    }


class Writer:
    """A ReportWriter over a MemoryKube, its caches filled as the watches would fill them."""

    def __init__(self, kube: MemoryKube, secrets: cache.Store | None = None) -> None:
        self.kube = kube
        self.smds: dict[str, dict[str, Any]] = {}
        namespaces = cache.Store("Namespace")
        namespaces.put({"metadata": {"name": NAMESPACE, "uid": "ns-uid"}})

        async def stamp_key() -> bytes:
            return KEY

        def clock() -> datetime:
            return NOW

        leading = asyncio.Event()
        leading.set()
        self.writer = ReportWriter(
            cast(Kube, kube),
            OperatorConfig(resync_seconds=30),
            self.smds,
            namespaces,
            secrets or cache.Store("Secret"),
            stamp_key,
            leading,
            clock,
        )

    def add(self, *bodies: dict[str, Any]) -> None:
        for body in bodies:
            self.smds[f"{NAMESPACE}/{body['metadata']['name']}"] = body

    def watched(self) -> None:
        """The watch brings what the API server holds with the operator's labels."""
        for key in list(self.writer.store.all()):
            self.writer.store.remove(cache.key_of(key))
        for (kind, _, _), item in self.kube.objects.items():
            labels = item["metadata"].get("labels") or {}
            if kind == "PolicyReport" and all(labels.get(k) == v for k, v in reports.LABELS.items()):
                self.writer.store.put(copy.deepcopy(item))

    async def sync(self) -> None:
        await self.writer.sync(NAMESPACE)
        self.watched()


async def test_a_report_is_created_once_then_left_alone_while_nothing_changes() -> None:
    kube = MemoryKube()
    writer = Writer(kube)
    writer.add(smd("fraud"), smd("lenient", "Weakened"))

    await writer.sync()
    await writer.sync()
    await writer.sync()

    assert kube.writes == [("create", REPORT_KEY)]
    stored = kube.objects[REPORT_KEY]
    assert [item["result"] for item in stored["results"]] == ["pass", "warn"]
    assert reports.intact(KEY, "ns-uid", stored)


async def test_a_changed_verdict_or_an_edited_report_is_written_again() -> None:
    kube = MemoryKube()
    writer = Writer(kube)
    writer.add(smd("fraud"))
    await writer.sync()

    writer.add(smd("fraud", "Fail"))
    await writer.sync()
    assert kube.objects[REPORT_KEY]["results"][0]["result"] == "fail"

    kube.tamper(REPORT_KEY, lambda item: item["results"][0].update(result="pass"))
    writer.watched()
    await writer.sync()
    assert kube.objects[REPORT_KEY]["results"][0]["result"] == "fail"
    assert kube.writes == [("create", REPORT_KEY), ("replace", REPORT_KEY), ("replace", REPORT_KEY)]


async def test_a_report_of_that_name_without_the_operators_labels_is_never_touched() -> None:
    kube = MemoryKube()
    kube.add(
        {
            "apiVersion": "wgpolicyk8s.io/v1alpha2",
            "kind": "PolicyReport",
            "metadata": {"name": reports.NAME, "namespace": NAMESPACE},
            "results": [],
        }
    )
    writer = Writer(kube)
    writer.add(smd("fraud"))

    await writer.sync()
    await writer.sync()

    assert kube.writes == []
    assert kube.objects[REPORT_KEY]["results"] == []
    del kube.objects[REPORT_KEY]  # they removed it: the name is free
    await writer.sync()
    assert kube.writes == [("create", REPORT_KEY)]


async def test_a_namespace_without_models_loses_its_report_only_when_it_carries_the_stamp() -> None:
    kube = MemoryKube()
    writer = Writer(kube)
    writer.add(smd("fraud"))
    await writer.sync()
    writer.smds.clear()

    kube.tamper(REPORT_KEY, lambda item: item["results"].clear())  # no longer as the operator wrote it
    writer.watched()
    await writer.sync()
    assert REPORT_KEY in kube.objects

    writer.add(smd("fraud"))
    await writer.sync()  # restored, and stamped again
    writer.smds.clear()
    await writer.sync()
    assert REPORT_KEY not in kube.objects
    assert kube.writes[-1] == ("delete", REPORT_KEY)


class RefusingKube(MemoryKube):
    """Refuses every report, as for one too large for the API server to store."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def create(self, manifest: Any, *, dry_run: bool = False) -> dict[str, Any]:
        self.attempts += 1
        raise KubeError(422, "request entity too large")


async def test_a_refused_write_is_tried_again_after_a_pause_not_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = RefusingKube()
    writer = Writer(kube)
    writer.add(smd("fraud"))

    for _ in range(5):
        await writer.sync()

    assert kube.attempts == 1
    assert [record.getMessage() for record in caplog.records] == [
        "could not write the compliance report of ml-prod: request entity too large; trying again in 30s"
    ]


class WithoutReportsKube(MemoryKube):
    """A cluster without the report's CRD: every list of it is a 404."""

    async def list(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise KubeError(404, "the server could not find the requested resource")


async def test_without_the_api_the_first_smd_is_told_at_once_and_only_once() -> None:
    kube = WithoutReportsKube()
    secrets = cache.Store("Secret")
    ca = {"name": naming.CA_SECRET, "namespace": "secure-model-operator", "uid": "ca-uid"}
    secrets.put({"apiVersion": "v1", "kind": "Secret", "metadata": ca})
    writer = Writer(kube, secrets)
    running = asyncio.create_task(writer.writer.run())
    try:
        await asyncio.sleep(0.1)
        assert kube.events == []  # nothing to report yet

        for name in ("fraud", "churn"):
            writer.add(smd(name))
            writer.writer.changed(NAMESPACE)
            await asyncio.sleep(0.1)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    # Well within the 30-second pause before the API is looked for again.
    assert [event["reason"] for event in kube.events] == ["ComplianceReportsUnavailable"]
    assert kube.events[0]["involvedObject"]["name"] == naming.CA_SECRET

"""Leader election's rule, and the elector's behaviour against an in-memory Lease: one holder at a time,
and a holder that cannot renew stops writing before anyone else may take over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from securemodels.config import LeaderElection
from securemodels.handlers import leadership
from securemodels.handlers.leadership import Elector, decide
from securemodels.k8s.client import KubeError

SETTINGS = LeaderElection(lease_duration_seconds=15, renew_deadline_seconds=10, retry_period_seconds=2)
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def lease(holder: str, renewed: datetime, duration: int = 15, transitions: int = 0) -> dict[str, Any]:
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration,
        "acquireTime": "2030-01-01T11:00:00.000000Z",
        "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "leaseTransitions": transitions,
    }


def test_no_lease_yet_is_taken() -> None:
    spec = decide(None, "a", NOW, SETTINGS).spec

    assert spec is not None
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0


def test_a_lease_held_by_another_and_fresh_is_left_alone() -> None:
    assert decide(lease("b", NOW - timedelta(seconds=14)), "a", NOW, SETTINGS).spec is None


def test_an_expired_lease_is_taken_and_the_transition_counted() -> None:
    spec = decide(lease("b", NOW - timedelta(seconds=15), transitions=3), "a", NOW, SETTINGS).spec

    assert spec is not None
    assert spec["holderIdentity"] == "a"
    assert spec["leaseTransitions"] == 4
    assert spec["acquireTime"] == "2030-01-01T12:00:00.000000Z"


def test_the_holder_renews_without_a_transition_and_keeps_its_acquire_time() -> None:
    spec = decide(lease("a", NOW - timedelta(seconds=2), transitions=3), "a", NOW, SETTINGS).spec

    assert spec is not None
    assert spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == "2030-01-01T11:00:00.000000Z"
    assert spec["renewTime"] == "2030-01-01T12:00:00.000000Z"


def test_a_released_lease_is_taken_at_once() -> None:
    assert decide(lease("", NOW), "a", NOW, SETTINGS).spec is not None


def test_the_lease_duration_written_by_the_holder_counts_not_ours() -> None:
    assert decide(lease("b", NOW - timedelta(seconds=20), duration=30), "a", NOW, SETTINGS).spec is None


@pytest.mark.parametrize(
    ("retry", "deadline", "duration"),
    [(2, 15, 15), (10, 10, 15), (2, 20, 15)],
    ids=["deadline not before expiry", "retry not before deadline", "deadline after expiry"],
)
def test_settings_that_would_let_two_leaders_write_are_refused(
    retry: float, deadline: int, duration: int
) -> None:
    with pytest.raises(ValueError, match="retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds"):
        LeaderElection(
            retry_period_seconds=retry, renew_deadline_seconds=deadline, lease_duration_seconds=duration
        )


class LeaseServer:
    """One Lease in memory, written with resourceVersion checks; `down` makes every call fail."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        if self.down:
            raise KubeError(0, "connection refused")
        return None if self.lease is None else {**self.lease, "metadata": {**self.lease["metadata"]}}

    async def create(
        self, manifest: dict[str, Any], *, fenced: bool = True, dry_run: bool = False
    ) -> dict[str, Any]:
        if self.down:
            raise KubeError(0, "connection refused")
        if self.lease is not None:
            raise KubeError(409, "already exists")
        return self._store(manifest)

    async def replace(
        self, manifest: dict[str, Any], *, fenced: bool = True, dry_run: bool = False
    ) -> dict[str, Any]:
        if self.down:
            raise KubeError(0, "connection refused")
        if manifest["metadata"].get("resourceVersion") != str(self.version):
            raise KubeError(409, "conflict")
        return self._store(manifest)

    def _store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": str(self.version)}}
        return self.lease


FAST = LeaderElection(lease_duration_seconds=3, renew_deadline_seconds=2, retry_period_seconds=0.1)


def elector(server: LeaseServer, identity: str, log: list[str]) -> Elector:
    return Elector(
        server,  # type: ignore[arg-type]
        FAST,
        "ops",
        identity,
        lambda: log.append(f"{identity} starts"),
        lambda: log.append(f"{identity} stops"),
    )


async def test_of_two_electors_one_leads_and_the_other_waits() -> None:
    server, log = LeaseServer(), list[str]()
    first, second = elector(server, "a", log), elector(server, "b", log)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()

    assert log == ["a starts"]
    assert first.may_write() and not second.may_write()


async def test_a_holder_that_cannot_renew_stops_writing_before_the_lease_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, log = LeaseServer(), list[str]()
    holder = elector(server, "a", log)
    task = asyncio.create_task(holder.run())
    await asyncio.sleep(0.3)
    assert holder.may_write()
    server.down = True
    stopped_at: list[float] = []
    loop = asyncio.get_running_loop()
    cut = loop.time()
    while holder.may_write():
        await asyncio.sleep(0.05)
    stopped_at.append(loop.time() - cut)
    task.cancel()

    assert stopped_at[0] < FAST.lease_duration_seconds  # before anyone else could take the Lease
    assert stopped_at[0] >= FAST.renew_deadline_seconds - 0.5  # and not on the first failed renewal


async def test_a_released_lease_passes_to_the_standby_without_waiting_for_expiry() -> None:
    server, log = LeaseServer(), list[str]()
    first, second = elector(server, "a", log), elector(server, "b", log)
    first_task = asyncio.create_task(first.run())
    await asyncio.sleep(0.3)
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(0.3)
    first_task.cancel()
    await first.release()
    await asyncio.sleep(0.5)
    second_task.cancel()

    assert log == ["a starts", "b starts"]
    assert second.may_write()
    assert not first.may_write()


def test_microtime_round_trips() -> None:
    assert leadership._parse(leadership._format(NOW)) == NOW

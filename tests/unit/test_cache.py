"""The watch-fed caches: a Store of one kind with its indexes, and a Reflector that keeps it current from
a list and a watch, relisting only when the API server says the version is gone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast

import pytest

from securemodels.k8s import cache
from securemodels.k8s.cache import Reflector, Store
from securemodels.k8s.client import Kube, KubeError

Manifest = dict[str, Any]


def item(name: str, namespace: str = "ml", version: str = "1", **labels: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": version, "labels": labels},
    }


def by_team(manifest: Mapping[str, Any]) -> Iterable[str]:
    team = (manifest["metadata"].get("labels") or {}).get("team")
    return [team] if team else []


def store() -> Store:
    return Store("ConfigMap", {"team": by_team})


def names(items: Iterable[Manifest | None]) -> list[str | None]:
    return [found["metadata"]["name"] if found else None for found in items]


def held(kept: Store) -> list[str]:
    """The names of what the store holds, sorted."""
    return sorted(str(found["metadata"]["name"]) for found in kept.all())


def test_an_offered_answer_never_hides_a_newer_version_the_watch_brought() -> None:
    kept = store()
    kept.put(item("a", version="101", team="status-updated"))

    kept.offer(item("a", version="100", team="as-written"))  # the answer to a write, arriving late
    kept.offer(item("b", version="7"))

    assert kept.get("ml", "a") == item("a", version="101", team="status-updated")
    assert kept.get("ml", "b") == item("b", version="7")


def test_an_offered_newer_version_replaces_the_cached_one() -> None:
    kept = store()
    kept.put(item("a", version="99"))

    kept.offer(item("a", version="100", team="written"))

    assert kept.get("ml", "a") == item("a", version="100", team="written")
    assert names(kept.indexed("team", "written")) == ["a"]


def test_put_returns_what_it_replaced() -> None:
    kept = store()

    assert kept.put(item("a")) is None
    assert kept.put(item("a", version="2")) == item("a")
    assert kept.get("ml", "a") == item("a", version="2")
    assert len(kept) == 1


def test_get_by_namespace_and_name() -> None:
    kept = store()
    kept.put(item("a", "ml"))
    kept.put(item("a", "ops"))
    kept.put({"kind": "Node", "metadata": {"name": "n1"}})

    assert kept.get("ops", "a") == item("a", "ops")
    assert kept.get(None, "n1") == {"kind": "Node", "metadata": {"name": "n1"}}
    assert kept.get("", "n1") is not None
    assert kept.get("other", "a") is None
    assert sorted(kept) == [("", "n1"), ("ml", "a"), ("ops", "a")]
    assert len(kept.all()) == 3


def test_remove_returns_what_was_there() -> None:
    kept = store()
    kept.put(item("a", team="x"))

    assert kept.remove(("ml", "a")) == item("a", team="x")
    assert kept.remove(("ml", "a")) is None
    assert kept.get("ml", "a") is None
    assert list(kept) == []
    assert kept.indexed("team", "x") == []


def test_indexes_follow_every_change() -> None:
    kept = store()
    kept.put(item("b", team="x"))
    kept.put(item("a", team="x"))
    kept.put(item("c", team="y"))

    assert names(kept.indexed("team", "x")) == ["a", "b"]
    kept.put(item("a", team="y"))
    assert names(kept.indexed("team", "x")) == ["b"]
    assert names(kept.indexed("team", "y")) == ["a", "c"]
    kept.put(item("b"))
    assert kept.indexed("team", "x") == []
    assert kept.indexed("team", "unknown") == []


def test_an_object_may_have_several_index_values() -> None:
    kept = Store("ConfigMap", {"letters": lambda manifest: list(manifest["metadata"]["name"])})
    kept.put(item("ab"))

    assert names(kept.indexed("letters", "a")) == ["ab"]
    assert names(kept.indexed("letters", "b")) == ["ab"]


def test_replace_returns_every_change_and_nothing_unchanged() -> None:
    kept = store()
    for name in ("same", "changed", "gone"):
        kept.put(item(name))

    changes = kept.replace([item("same"), item("changed", version="2"), item("new")], "ml")

    assert sorted(((names([old])[0], names([new])[0]) for old, new in changes), key=str) == sorted(
        [("gone", None), ("changed", "changed"), (None, "new")], key=str
    )
    (changed,) = [(old, new) for old, new in changes if old and new]
    assert changed == (item("changed"), item("changed", version="2"))
    assert held(kept) == ["changed", "new", "same"]


def test_replace_prunes_only_its_own_namespace() -> None:
    kept = store()
    kept.put(item("a", "ml"))
    kept.put(item("b", "ops"))

    changes = kept.replace([], "ml")

    assert changes == [(item("a", "ml"), None)]
    assert kept.get("ops", "b") == item("b", "ops")


def test_replace_of_everything_prunes_every_namespace() -> None:
    kept = store()
    kept.put(item("a", "ml"))
    kept.put(item("b", "ops", team="x"))

    changes = kept.replace([item("c", "ml")], None)

    assert sorted(str(old["metadata"]["name"]) for old, _ in changes if old) == ["a", "b"]
    assert names(kept.all()) == ["c"]
    assert kept.indexed("team", "x") == []


@pytest.mark.parametrize(
    ("strip", "expected"),
    [
        (
            cache.without_managed_fields,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"a": 1},
                "status": {"phase": "Running", "podIP": "10.0.0.1"},
            },
        ),
        (cache.metadata_only, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        (
            cache.pod_essentials,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"a": 1},
                "status": {"phase": "Running"},
            },
        ),
    ],
    ids=["without managed fields", "metadata only", "pod essentials"],
)
def test_objects_are_stripped_to_what_judging_needs(strip: cache.Strip, expected: Manifest) -> None:
    pod: Manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "managedFields": [{"manager": "kubelet"}]},
        "spec": {"a": 1},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }

    assert strip(pod) == expected
    assert pod["metadata"]["managedFields"] == [{"manager": "kubelet"}]


def test_key_of_a_cluster_scoped_object_has_no_namespace() -> None:
    assert cache.key_of({"metadata": {"name": "n1"}}) == ("", "n1")
    assert cache.key_of(item("a")) == ("ml", "a")


# ------------------------------------------------------------------------------------------ reflector


class Stop(Exception):
    """Ends a reflector's run once the script is played."""


Event = tuple[str, Manifest] | KubeError


class FakeKube:
    """Answers lists and watches from a script: each list call takes the next (items, version); each
    watch call plays the next list of events (a KubeError raised where it stands), then ends. When
    either script is exhausted, Stop is raised."""

    def __init__(self, lists: list[tuple[list[Manifest], str]], watches: list[list[Event]]) -> None:
        self.lists, self.watches = list(lists), list(watches)
        self.listed: list[tuple[str, str | None, Mapping[str, str] | None]] = []
        self.watched: list[str] = []

    async def list_with_version(
        self,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, Any] | None = None,
        limit: int | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> tuple[list[Manifest], str]:
        self.listed.append((kind, namespace, labels))
        if not self.lists:
            raise Stop
        return self.lists.pop(0)

    def watch(
        self,
        kind: str,
        namespace: str | None,
        labels: Mapping[str, Any] | None,
        resource_version: str,
        server_timeout: int,
        fields: Mapping[str, str] | None = None,
    ) -> AsyncIterator[tuple[str, Manifest]]:
        self.watched.append(resource_version)
        if not self.watches:
            raise Stop
        return self._play(self.watches.pop(0))

    @staticmethod
    async def _play(events: list[Event]) -> AsyncIterator[tuple[str, Manifest]]:
        for event in events:
            if isinstance(event, KubeError):
                raise event
            yield event


Change = tuple[str, str | None, str | None]


def reflector(kube: FakeKube, **options: Any) -> tuple[Reflector, list[Change]]:
    seen: list[Change] = []

    def on_change(kind: str, old: Manifest | None, new: Manifest | None) -> None:
        seen.append((kind, *names([old, new])))  # type: ignore[arg-type]

    return Reflector(cast(Kube, kube), store(), on_change, **options), seen


async def run(found: Reflector) -> None:
    with pytest.raises(Stop):
        await asyncio.wait_for(found.run(), timeout=5)


def bookmark(version: str) -> tuple[str, Manifest]:
    return "BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": version}}


async def test_it_lists_then_follows_the_watch_from_the_lists_version() -> None:
    kube = FakeKube(
        lists=[([item("a"), item("b")], "10")],
        watches=[
            [
                ("ADDED", item("c", version="11")),
                ("MODIFIED", item("a", version="12")),
                ("DELETED", item("b", version="13")),
            ]
        ],
    )
    found, seen = reflector(kube, namespace="ml", labels={"managed": "yes"})

    await run(found)

    assert kube.listed == [("ConfigMap", "ml", {"managed": "yes"})]
    assert kube.watched[0] == "10"
    assert seen == [
        ("ConfigMap", None, "a"),
        ("ConfigMap", None, "b"),
        ("ConfigMap", None, "c"),
        ("ConfigMap", "a", "a"),
        ("ConfigMap", "b", None),
    ]
    assert held(found.store) == ["a", "c"]
    assert found.synced.is_set()
    assert found.problem is None


async def test_a_watch_that_ends_resumes_from_the_last_version_seen_without_a_relist() -> None:
    kube = FakeKube(
        lists=[([item("a")], "10")],
        watches=[[("MODIFIED", item("a", version="11")), bookmark("15")], [bookmark("20")], []],
    )
    found, _ = reflector(kube)

    await run(found)

    assert kube.watched == ["10", "15", "20", "20"]
    assert len(kube.listed) == 1


async def test_a_bookmark_changes_nothing() -> None:
    kube = FakeKube(lists=[([item("a")], "10")], watches=[[bookmark("11")]])
    found, seen = reflector(kube)

    await run(found)

    assert seen == [("ConfigMap", None, "a")]
    assert names(found.store.all()) == ["a"]


async def test_an_unchanged_object_and_an_unknown_deletion_are_not_news() -> None:
    kube = FakeKube(
        lists=[([item("a")], "10")],
        watches=[[("MODIFIED", item("a")), ("DELETED", item("never-seen", version="12"))]],
    )
    found, seen = reflector(kube)

    await run(found)

    assert seen == [("ConfigMap", None, "a")]
    assert kube.watched == ["10", "12"]


async def test_gone_forces_a_relist_that_prunes_what_was_deleted_meanwhile() -> None:
    kube = FakeKube(
        lists=[([item("a"), item("b")], "10"), ([item("a", version="30")], "31")],
        watches=[[("ADDED", item("c", version="11")), KubeError(410, "too old resource version")]],
    )
    found, seen = reflector(kube)

    await run(found)

    assert kube.watched == ["10", "31"]
    assert len(kube.listed) == 2
    assert held(found.store) == ["a"]
    assert found.store.get("ml", "a") == item("a", version="30")
    assert sorted(seen[3:], key=str) == sorted(
        [("ConfigMap", "b", None), ("ConfigMap", "c", None), ("ConfigMap", "a", "a")], key=str
    )


async def test_other_errors_back_off_and_resume_from_the_same_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    kube = FakeKube(
        lists=[([item("a")], "10")],
        watches=[[KubeError(500, "etcd is unhappy")], [KubeError(0, "connection reset")], [bookmark("11")]],
    )
    found, _ = reflector(kube)

    await run(found)

    assert slept == [1.0, 2.0]
    assert kube.watched == ["10", "10", "10", "11"]
    assert len(kube.listed) == 1
    assert found.problem is None  # the bookmark shows the watch follows again: readiness recovers


async def test_a_watch_broken_by_an_error_resumes_after_the_last_event_it_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    kube = FakeKube(
        lists=[([item("a")], "10")],
        watches=[[("MODIFIED", item("a", version="14")), KubeError(0, "connection reset")], []],
    )
    found, _ = reflector(kube)

    await run(found)

    assert kube.watched == ["10", "14", "14"]  # not replayed from 10
    assert len(kube.listed) == 1


async def test_a_failing_list_is_reported_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    kube = FakeKube(lists=[([item("a")], "10")], watches=[])
    failures = [KubeError(403, "forbidden")]
    original = kube.list_with_version
    problems: list[str | None] = []

    async def flaky(*args: Any, **kwargs: Any) -> tuple[list[Manifest], str]:
        if failures:
            raise failures.pop()
        problems.append(found.problem)
        return await original(*args, **kwargs)

    kube.list_with_version = flaky  # type: ignore[method-assign]
    found, _ = reflector(kube)

    await run(found)

    assert problems == ["ConfigMap: forbidden"]
    assert found.problem is None
    assert found.synced.is_set()


async def test_a_failing_change_handler_does_not_stop_the_cache() -> None:
    kube = FakeKube(lists=[([item("a")], "10")], watches=[[("ADDED", item("b", version="11"))]])

    def broken(kind: str, old: Manifest | None, new: Manifest | None) -> None:
        raise RuntimeError("bad route")

    found = Reflector(cast(Kube, kube), store(), broken)

    await run(found)

    assert held(found.store) == ["a", "b"]


async def test_objects_are_stored_stripped() -> None:
    pod = {
        **item("p", version="11"),
        "kind": "Pod",
        "spec": {"nodeName": "n"},
        "status": {"phase": "Running", "podIP": "x"},
    }
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    kube = FakeKube(lists=[([], "10")], watches=[[("ADDED", pod)]])
    found, _ = reflector(kube, strip=cache.pod_essentials)

    await run(found)

    (stored,) = found.store.all()
    assert "managedFields" not in stored["metadata"]
    assert stored["status"] == {"phase": "Running"}


async def test_it_is_not_synced_before_the_first_list() -> None:
    kube = FakeKube(lists=[], watches=[])
    found, _ = reflector(kube)

    await run(found)

    assert not found.synced.is_set()
    assert found.kind == "ConfigMap"


def test_what_is_read_is_a_copy_that_changes_nothing_cached() -> None:
    kept = store()
    kept.put(item("a", team="x"))

    for read in (kept.get("ml", "a"), kept.all()[0], kept.indexed("team", "x")[0]):
        assert read is not None
        read["metadata"]["labels"]["team"] = "changed by a reader"

    assert kept.get("ml", "a") == item("a", team="x")
    assert names(kept.indexed("team", "x")) == ["a"]


def test_compact_shares_keys_and_short_values_and_stays_equal() -> None:
    """Decoded from separate watch events, two objects hold separate copies of the same strings."""
    first, second = (
        json.loads('{"metadata": {"name": "m", "namespace": "ml-prod"}, "data": {"k": "' + "x" * 100 + '"}}')
        for _ in range(2)
    )
    assert next(iter(first["metadata"])) is not next(iter(second["metadata"]))
    expected = json.loads(json.dumps(first))

    a, b = cache.compact(first), cache.compact(second)

    assert a == expected
    assert next(iter(a["metadata"])) is next(iter(b["metadata"]))  # one "name" key object
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]

"""Watch-fed caches: everything a reconcile reads, kept current by list and watch.

A reflector (client-go's idea) lists a kind once, then follows its watch from the list's
resourceVersion, resuming from the last version it saw (bookmarks keep it fresh while nothing changes);
only when the API server answers 410 Gone (the version was compacted away) does it list again, and the
relist removes what was deleted meanwhile. A reconcile then reads memory, so an SMD at rest costs the
API server nothing but the open watches.

Objects are kept stripped to what judging needs: no managedFields, pods without most of their status,
nodes and namespaces as their metadata alone, and compressed (Store). Secrets are only watched with the
operator's label, so no Secret data the operator does not own is ever held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from securemodels import metrics
from securemodels.k8s.client import Kube, KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
Key = tuple[str, str]  # namespace ("" when cluster-scoped), name
OnChange = Callable[[str, Manifest | None, Manifest | None], None]
Strip = Callable[[Manifest], Manifest]
IndexFunction = Callable[[Manifest], Iterable[str]]

MAX_BACKOFF = 60.0
_SHORT = 64  # characters: names, labels, field values that thousands of cached objects repeat


def compact(value: Any) -> Any:
    """A copy sharing one string object for each key and short value, however many objects hold it:
    every object decoded from its own watch event otherwise holds its own copies of the same keys, a
    third of a cache's memory."""
    if isinstance(value, dict):
        return {sys.intern(key): compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compact(item) for item in value]
    if isinstance(value, str) and len(value) <= _SHORT:
        return sys.intern(value)
    return value


def key_of(item: Mapping[str, Any]) -> Key:
    metadata = item["metadata"]
    return str(metadata.get("namespace") or ""), str(metadata["name"])


def without_managed_fields(item: Manifest) -> Manifest:
    metadata = {key: value for key, value in item["metadata"].items() if key != "managedFields"}
    return {**item, "metadata": metadata}


def metadata_only(item: Manifest) -> Manifest:
    return {
        "apiVersion": item["apiVersion"],
        "kind": item["kind"],
        "metadata": without_managed_fields(item)["metadata"],
    }


def _container_state(status: Mapping[str, Any]) -> Manifest:
    """A container's name and which state it is in; for one that ended, its exit code and termination
    message (where the weights' verifier reports what it verified)."""
    kept: Manifest = {"name": status.get("name")}
    for key in ("state", "lastState"):
        state = status.get(key) or {}
        kept[key] = {
            kind: {
                field: value for field, value in (detail or {}).items() if field in ("exitCode", "message")
            }
            if kind == "terminated"
            else {}
            for kind, detail in state.items()
        }
    return kept


def pod_essentials(item: Manifest) -> Manifest:
    """A pod as judging sees it: what runs, where, whether it is still running, and how its containers
    started and ended."""
    stripped = without_managed_fields(item)
    status = item.get("status") or {}
    stripped["status"] = {"phase": status.get("phase")}
    for key in ("initContainerStatuses", "containerStatuses"):
        if status.get(key):
            stripped["status"][key] = [_container_state(entry) for entry in status[key]]
    return stripped


def _version(item: Manifest) -> int | None:
    found = str(item["metadata"].get("resourceVersion") or "")
    return int(found) if found.isdigit() else None


def _newer(first: Manifest, second: Manifest) -> bool:
    """Whether `first` is a later version of the object than `second`. The API server's
    resourceVersions are etcd revisions, decimal and comparable (KEP-5504); anything else is not
    compared."""
    one, other = _version(first), _version(second)
    return one is not None and other is not None and one > other


def pack(item: Manifest) -> bytes:
    """An object as compressed JSON: what a Store holds."""
    return zlib.compress(json.dumps(item, separators=(",", ":")).encode(), 1)


def unpack(blob: bytes) -> Manifest:
    decoded: Manifest = json.loads(zlib.decompress(blob))
    return decoded


class Store:
    """The objects of one kind, by namespace and name, with optional indexes from a value to objects.

    Each object is held as compressed JSON and decoded when it is read: a cached Deployment takes a
    tenth of what its Python objects would, for a few dozen microseconds per read, and a reconcile
    reads only its own SMD's objects. Every read is a fresh copy: what a caller changes is its own."""

    def __init__(self, kind: str, indexes: Mapping[str, IndexFunction] | None = None) -> None:
        self.kind = kind
        self._items: dict[Key, bytes] = {}
        self._index_functions = dict(indexes or {})
        self._indexes: dict[str, dict[str, set[Key]]] = {
            name: defaultdict(set) for name in self._index_functions
        }
        self._indexed_as: dict[Key, tuple[tuple[str, str], ...]] = {}  # the entries to remove with it

    def get(self, namespace: str | None, name: str) -> Manifest | None:
        blob = self._items.get((namespace or "", name))
        return None if blob is None else unpack(blob)

    def all(self) -> list[Manifest]:
        return [unpack(blob) for blob in self._items.values()]

    def __iter__(self) -> Iterator[Key]:
        """The keys of what it holds."""
        return iter(list(self._items))

    def indexed(self, index: str, value: str) -> list[Manifest]:
        return [unpack(self._items[key]) for key in sorted(self._indexes[index].get(value, ()))]

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Manifest) -> Manifest | None:
        namespace, name = key_of(item)
        key = (sys.intern(namespace), sys.intern(name))
        old = self.remove(key)
        self._items[key] = pack(item)
        entries = tuple(
            (index, sys.intern(value))
            for index, function in self._index_functions.items()
            for value in function(item)
        )
        for index, value in entries:
            self._indexes[index][value].add(key)
        if entries:
            self._indexed_as[key] = entries
        return old

    def offer(self, item: Manifest) -> None:
        """An object read or written outside the watch (the answer to the operator's own write): kept,
        unless the watch has already brought a newer version. The answer to a write can arrive after
        the watch event of a later change (a controller's status update); put blindly, it would hide
        that change until the object changes again."""
        known = self.get(*key_of(item))
        if known is not None and _newer(known, item):
            return
        self.put(item)

    def remove(self, key: Key) -> Manifest | None:
        blob = self._items.pop(key, None)
        if blob is None:
            return None
        for index, value in self._indexed_as.pop(key, ()):
            keys = self._indexes[index].get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._indexes[index][value]
        return unpack(blob)

    def replace(
        self, items: Iterable[Manifest], namespace: str | None, name: str | None = None
    ) -> list[tuple[Manifest | None, Manifest | None]]:
        """The result of a (re)list of one scope (a namespace or everything, one name or all): returns
        the changes."""
        fresh = {key_of(item): item for item in items}
        scope = [
            key
            for key in self._items
            if (namespace is None or key[0] == namespace) and (name is None or key[1] == name)
        ]
        changes: list[tuple[Manifest | None, Manifest | None]] = [
            (self.remove(key), None) for key in scope if key not in fresh
        ]
        for item in fresh.values():
            old = self.put(item)
            if old != item:
                changes.append((old, item))
        return changes


class Reflector:
    """Keeps one Store current for one scope (a namespace, or the whole cluster) and label selector."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        on_change: OnChange,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
        strip: Strip = without_managed_fields,
        server_timeout: int = 300,
    ) -> None:
        self._kube, self.store, self._on_change = kube, store, on_change
        self.namespace, self._labels, self._strip = namespace, dict(labels or {}), strip
        self._fields = dict(fields or {})
        self._server_timeout = server_timeout
        self.synced = asyncio.Event()
        self.problem: str | None = None  # why the last attempt failed, for readiness
        self._version = ""  # where the watch resumes; empty: list first

    @property
    def kind(self) -> str:
        return self.store.kind

    def _notify(self, old: Manifest | None, new: Manifest | None) -> None:
        try:
            self._on_change(self.kind, old, new)
        except Exception:  # a bad route must not stop the cache
            log.exception("handling a change of %s failed", self.kind)

    async def _relist(self) -> str:
        items, version = await self._kube.list_with_version(
            self.kind, self.namespace, self._labels, fields=self._fields or None
        )
        fresh = (self._strip(item) for item in items)
        for old, new in self.store.replace(fresh, self.namespace, self._fields.get("metadata.name")):
            self._notify(old, new)
        self.synced.set()
        metrics.CACHE_SYNCED.labels(kind=self.kind).set(1)
        self.problem = None
        return version

    async def _follow(self) -> None:
        """Apply watch events until the stream ends or goes quiet for too long. The version to resume
        from moves with every event, so that a watch broken by an error resumes where it stopped."""
        quiet = self._server_timeout + 60
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(quiet) as deadline:
                async for event_type, item in self._kube.watch(
                    self.kind,
                    self.namespace,
                    self._labels,
                    self._version,
                    self._server_timeout,
                    self._fields or None,
                ):
                    deadline.reschedule(loop.time() + quiet)
                    if self.problem is not None:
                        self.problem = None
                        metrics.CACHE_SYNCED.labels(kind=self.kind).set(1)
                    self._version = str(item["metadata"].get("resourceVersion") or self._version)
                    if event_type == "BOOKMARK":
                        continue
                    if event_type == "DELETED":
                        old = self.store.remove(key_of(item))
                        if old is not None:
                            self._notify(old, None)
                        continue
                    stripped = self._strip(item)
                    old = self.store.put(stripped)
                    if old != stripped:
                        self._notify(old, stripped)

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                if not self._version:
                    self._version = await self._relist()
                await self._follow()
                backoff = 1.0
            except KubeError as error:
                if error.code == 410:
                    log.info("watch of %s expired (410 Gone); listing again", self.kind)
                    self._version = ""
                    continue
                self.problem = f"{self.kind}: {error}"
                metrics.CACHE_SYNCED.labels(kind=self.kind).set(0)
                log.warning("watch of %s failed (%s); retrying in %.0fs", self.kind, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

"""The only way the operator talks to the API server.

Objects travel as plain dicts (lightkube's generic resources are dict subclasses), so the pure layers
never see a client type. Every write is counted in `securemodels_api_writes_total`, which is how the
benchmarks and tests know that a steady state writes nothing.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig, operators
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ConfigError, NotReadyError
from lightkube.core.selector import build_selector
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from securemodels import metrics
from securemodels.api import v1alpha1
from securemodels.desired.naming import FIELD_MANAGER

log = logging.getLogger(__name__)

# kind -> (group, version, plural, namespaced)
_KINDS: dict[str, tuple[str, str, str, bool]] = {
    "Deployment": ("apps", "v1", "deployments", True),
    "Service": ("", "v1", "services", True),
    "ServiceAccount": ("", "v1", "serviceaccounts", True),
    "Secret": ("", "v1", "secrets", True),
    "ConfigMap": ("", "v1", "configmaps", True),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", True),
    "Event": ("", "v1", "events", True),
    "Pod": ("", "v1", "pods", True),
    "ReplicaSet": ("apps", "v1", "replicasets", True),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies", True),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings", True),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", False),
    "ClusterRole": ("rbac.authorization.k8s.io", "v1", "clusterroles", False),
    "StorageClass": ("storage.k8s.io", "v1", "storageclasses", False),
    "Node": ("", "v1", "nodes", False),
    "Namespace": ("", "v1", "namespaces", False),
    "SelfSubjectAccessReview": ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", False),
    "SubjectAccessReview": ("authorization.k8s.io", "v1", "subjectaccessreviews", False),
    "Lease": ("coordination.k8s.io", "v1", "leases", True),
    v1alpha1.KIND: (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, True),
    # The compliance reports (config.policyReports), when their CRDs are installed.
    "PolicyReport": ("wgpolicyk8s.io", "v1alpha2", "policyreports", True),
    "Report": ("openreports.io", "v1alpha1", "reports", True),
}
_RESOURCES: dict[str, Any] = {
    kind: (create_namespaced_resource if namespaced else create_global_resource)(group, version, kind, plural)
    for kind, (group, version, plural, namespaced) in _KINDS.items()
}


# A label-selector value meaning "the label is present, whatever its value".
EXISTS = operators.exists()


class KubeError(Exception):
    """An API call failed. `code` is the HTTP status, 0 for transport trouble."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def transient(self) -> bool:
        """Worth retrying with backoff: transport trouble, throttling, server errors, conflicts."""
        return self.code == 0 or self.code in (409, 429) or self.code >= 500


def _error(error: Exception) -> KubeError:
    if isinstance(error, ApiError):
        return KubeError(error.status.code or 0, error.status.message or str(error))
    return KubeError(0, f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Credentials:
    """How to reach the API server, for kopf's own watch connections."""

    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    token: str | None = None
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None


def load_config(kubeconfig: Path | None) -> KubeConfig:
    """An explicit kubeconfig, else in-cluster service account, else $KUBECONFIG or ~/.kube/config.
    Raises ValueError when there is none, or it cannot be read."""
    try:
        return KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    except ConfigError as error:
        raise ValueError(str(error)) from error


def credentials(config: KubeConfig) -> Credentials:
    single: SingleConfig | None = config.get()
    if single is None:
        raise ValueError("the kubeconfig has no current context")
    cluster, user = single.cluster, single.user

    def path(value: str | None) -> str | None:
        return str(single.abs_file(value)) if value else None

    token = user.token if user else None
    if user and user.token_file:
        token = Path(single.abs_file(user.token_file)).read_text().strip()
    return Credentials(
        server=cluster.server,
        ca_path=path(cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure,
        token=token,
        certificate_path=path(user.client_cert) if user else None,
        certificate_data=user.client_cert_data if user else None,
        private_key_path=path(user.client_key) if user else None,
        private_key_data=user.client_key_data if user else None,
    )


class Kube:
    """Thin async wrapper over lightkube that speaks dicts and counts what it sends.

    Children are written whole: created with POST (never adopting an object that appeared meanwhile)
    and replaced with PUT at the resourceVersion that was judged (never overwriting an object that
    changed meanwhile). Deletes carry the uid and resourceVersion that were judged as preconditions.
    """

    def __init__(self, config: KubeConfig, timeout: float = 30.0) -> None:
        single = config.get()
        if single is None or single.user is None:
            raise ValueError("the kubeconfig has no current context with a user")
        # Every watch holds a connection (a dozen kinds per watched namespace) beside the requests:
        # httpx's default pool of 100 would starve them with watchNamespaces of ten namespaces.
        transport = httpx2.AsyncHTTPTransport(
            verify=verify_cluster(single.cluster, single.user, single.abs_file),
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=32),
        )
        self._api = AsyncClient(
            config=config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(timeout), transport=transport
        )
        # Asked before every write: a replica that does not lead must not write (leadership.py).
        self.may_write: Callable[[], bool] = lambda: True

    def _fence(self, fenced: bool, what: str) -> None:
        if fenced and not self.may_write():
            raise KubeError(0, f"not writing {what}: this replica does not hold the leader Lease")

    async def close(self) -> None:
        await self._api.close()

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        metrics.API_REQUESTS.labels(verb="get", kind=kind).inc()
        try:
            found = await self._api.get(_RESOURCES[kind], name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise _error(error) from error
        except httpx2.HTTPError as error:
            raise _error(error) from error
        return {"apiVersion": api_version(kind), "kind": kind, **dict(found)}

    def _list(
        self,
        kind: str,
        namespace: str | None,
        labels: Mapping[str, Any] | None,
        chunk_size: int | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> Any:
        selector = dict(labels) if labels else None
        field_selector: dict[str, Any] | None = dict(fields) if fields else None
        resource = _RESOURCES[kind]
        if _KINDS[kind][3]:
            return self._api.list(
                resource,
                namespace=namespace or "*",
                labels=selector,
                fields=field_selector,
                chunk_size=chunk_size,
            )
        return self._api.list(resource, labels=selector, fields=field_selector, chunk_size=chunk_size)

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        found, _ = await self.list_with_version(kind, namespace, labels, limit)
        return found

    async def list_with_version(
        self,
        kind: str,
        namespace: str | None = None,
        labels: Mapping[str, Any] | None = None,
        limit: int | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """The objects, and the resourceVersion of the collection to watch from."""
        metrics.API_REQUESTS.labels(verb="list", kind=kind).inc()
        try:
            items = self._list(kind, namespace, labels, chunk_size=limit or 500, fields=fields)
            found: builtins.list[dict[str, Any]] = []
            async for item in items:
                found.append({"apiVersion": api_version(kind), "kind": kind, **item})
                if limit is not None and len(found) >= limit:
                    break
            version = items.resourceVersion if found or limit is None else ""
            return found, version
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error
        except NotReadyError:
            return [], ""

    def watch(
        self,
        kind: str,
        namespace: str | None,
        labels: Mapping[str, Any] | None,
        resource_version: str,
        server_timeout: int,
        fields: Mapping[str, str] | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events after `resource_version`, with bookmarks so that a quiet watch can resume without a
        relist; raises KubeError(410) when the version is too old (the caller relists)."""
        metrics.API_REQUESTS.labels(verb="watch", kind=kind).inc()
        resource = _RESOURCES[kind]
        scope = (namespace or "*") if _KINDS[kind][3] else None
        request = self._api._client.prepare_request(  # lightkube has no bookmark option
            "list",
            res=resource,
            namespace=scope,
            watch=True,
            params={
                "timeoutSeconds": server_timeout,
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "labelSelector": build_selector(dict(labels)) if labels else None,
                "fieldSelector": build_selector(dict(fields), for_fields=True) if fields else None,
            },
        )
        return self._events(kind, self._api._client.watch(request))

    @staticmethod
    async def _events(kind: str, stream: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        try:
            async for event_type, item in stream:
                yield event_type, {"apiVersion": api_version(kind), "kind": kind, **dict(item)}
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error

    async def create(
        self, manifest: Mapping[str, Any], *, dry_run: bool = False, fenced: bool = True
    ) -> dict[str, Any]:
        """POST: fails with 409 when an object of that name exists, whoever made it."""
        kind = manifest["kind"]
        self._fence(fenced and not dry_run, kind)
        _count(kind, "create", dry_run)
        try:
            created = await self._api.create(_RESOURCES[kind](dict(manifest)), dry_run=dry_run)
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error
        return {"apiVersion": api_version(kind), "kind": kind, **dict(created)}

    async def replace(
        self, manifest: Mapping[str, Any], *, dry_run: bool = False, fenced: bool = True
    ) -> dict[str, Any]:
        """PUT the whole object: fields anyone else added are gone afterwards. With
        metadata.resourceVersion set, fails with 409 if the object changed since it was read."""
        kind, metadata = manifest["kind"], manifest["metadata"]
        self._fence(fenced and not dry_run, kind)
        _count(kind, "replace", dry_run)
        try:
            replaced = await self._api.replace(
                _RESOURCES[kind](dict(manifest)),
                metadata["name"],
                namespace=metadata.get("namespace"),
                dry_run=dry_run,
            )
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error
        return {"apiVersion": api_version(kind), "kind": kind, **dict(replaced)}

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """False when it was already gone. `uid` and `resource_version` are preconditions: the API
        server refuses (409) to delete an object that is not the one that was judged."""
        self._fence(True, kind)
        metrics.API_WRITES.labels(verb="delete", kind=kind).inc()
        client = self._api._client  # lightkube's delete takes no preconditions
        request = client.prepare_request("delete", res=_RESOURCES[kind], name=name, namespace=namespace)
        preconditions = {
            key: value for key, value in (("uid", uid), ("resourceVersion", resource_version)) if value
        }
        if preconditions:
            request.data = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        try:
            response = await client.send(client.build_adapter_request(request))  # type: ignore[no-untyped-call]
            client.raise_for_status(response)  # type: ignore[no-untyped-call]
        except ApiError as error:
            if error.status.code == 404:
                return False
            raise _error(error) from error
        except httpx2.HTTPError as error:
            raise _error(error) from error
        return True

    async def patch_status(self, name: str, namespace: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource (send nulls to remove fields); the status the
        server kept."""
        self._fence(True, v1alpha1.KIND)
        metrics.API_WRITES.labels(verb="patch_status", kind=v1alpha1.KIND).inc()
        try:
            patched = await self._api.patch(
                _RESOURCES[v1alpha1.KIND].Status,
                name,
                {"status": dict(status)},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error
        return dict(dict(patched).get("status") or {})

    async def review(self, body: Mapping[str, Any]) -> bool:
        """A SubjectAccessReview: does the authorizer allow what the body asks?"""
        metrics.API_ACCESS_REVIEWS.inc()
        try:
            result = await self._api.create(_RESOURCES["SubjectAccessReview"](dict(body)))
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error
        return bool(dict(result).get("status", {}).get("allowed"))

    async def allowed(
        self, verb: str, group: str, resource: str, namespace: str | None = None, name: str | None = None
    ) -> bool:
        """SelfSubjectAccessReview: may the operator's own identity do this?"""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    **({"namespace": namespace} if namespace else {}),
                    **({"name": name} if name else {}),
                }
            },
        }
        metrics.API_ACCESS_REVIEWS.inc()
        try:
            result = await self._api.create(_RESOURCES["SelfSubjectAccessReview"](review))
        except (ApiError, httpx2.HTTPError) as error:
            raise _error(error) from error
        return bool(dict(result).get("status", {}).get("allowed"))


def _count(kind: str, verb: str, dry_run: bool) -> None:
    if kind == "Lease":
        metrics.LEASE_WRITES.inc()
    elif dry_run:
        metrics.API_DRY_RUNS.labels(verb=verb, kind=kind).inc()
    else:
        metrics.API_WRITES.labels(verb=verb, kind=kind).inc()


def credentials_source(config: KubeConfig) -> Callable[[], Credentials]:
    """Credentials read afresh on each call: the kubelet rotates a pod's token file."""
    return lambda: credentials(config)


def api_version(kind: str) -> str:
    group, version, _, _ = _KINDS[kind]
    return f"{group}/{version}" if group else version

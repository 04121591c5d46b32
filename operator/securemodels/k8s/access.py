"""The authorizer's answers about each model's account, asked once and kept until RBAC changes.

Each answer set is one SubjectAccessReview per probe (desired/permissions.py); the baseline account is
asked only about what the model's account turned out to be allowed, to tell the cluster's grants from
the model's own. The runtime forgets answers when a binding or role that could affect them changes.
"""

from __future__ import annotations

import asyncio

from securemodels.desired import permissions
from securemodels.desired.model import Permissions
from securemodels.k8s.client import Kube

# SubjectAccessReviews in flight at once, so a burst (a ClusterRole change, a restart) stays gentle.
CONCURRENCY = 8


class AccessReviews:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._answers: dict[tuple[str, str], Permissions] = {}
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._epoch = 0  # bumped by forget(): answers asked before it are not kept

    def forget(self, namespace: str | None = None, account: str | None = None) -> None:
        """Drop the answers that a change could have made wrong: one account's, a namespace's, all."""
        self._epoch += 1
        self._answers = {
            key: value
            for key, value in self._answers.items()
            if not (namespace in (None, key[0]) and account in (None, key[1]))
        }

    async def _allowed(self, namespace: str, account: str, probe: permissions.Probe) -> bool:
        async with self._gate:
            return await self._kube.review(permissions.review(namespace, account, probe))

    async def _ask(
        self, namespace: str, account: str, probes: tuple[permissions.Probe, ...]
    ) -> list[permissions.Probe]:
        answers = await asyncio.gather(*(self._allowed(namespace, account, probe) for probe in probes))
        return [probe for probe, allowed in zip(probes, answers, strict=True) if allowed]

    async def of(self, namespace: str, account: str) -> Permissions:
        cached = self._answers.get((namespace, account))
        if cached is not None:
            return cached
        epoch = self._epoch
        allowed = await self._ask(namespace, account, permissions.PROBES)
        everyone = await self._ask(namespace, permissions.BASELINE_ACCOUNT, tuple(allowed)) if allowed else []
        found = Permissions(
            allowed=tuple(probe.describe() for probe in allowed),
            everyone=tuple(probe.describe() for probe in everyone),
        )
        if epoch == self._epoch:
            self._answers[(namespace, account)] = found
        return found

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
        self._answers: dict[tuple[str, str], tuple[tuple[str, ...], Permissions]] = {}
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

    async def _allowed(self, namespace: str, account: str, probe: permissions.Probe, where: str) -> bool:
        async with self._gate:
            return await self._kube.review(permissions.review(namespace, account, probe, where))

    async def _ask(
        self, namespace: str, account: str, questions: list[tuple[permissions.Probe, str]]
    ) -> list[tuple[permissions.Probe, str]]:
        answers = await asyncio.gather(
            *(self._allowed(namespace, account, probe, where) for probe, where in questions)
        )
        return [question for question, allowed in zip(questions, answers, strict=True) if allowed]

    async def of(self, namespace: str, account: str, elsewhere: tuple[str, ...] = ()) -> Permissions:
        """The account's answers in its namespace and cluster-wide, and in `elsewhere`: the namespaces
        where a binding names it (a grant there is the model's too)."""
        cached = self._answers.get((namespace, account))
        if cached is not None and cached[0] == elsewhere:
            return cached[1]
        epoch = self._epoch
        questions = [(probe, namespace) for probe in permissions.PROBES]
        questions += [
            (probe, where) for where in elsewhere for probe in permissions.PROBES if not probe.cluster_wide
        ]
        allowed = await self._ask(namespace, account, questions)
        everyone = await self._ask(namespace, permissions.BASELINE_ACCOUNT, allowed) if allowed else []

        def words(found: list[tuple[permissions.Probe, str]]) -> tuple[str, ...]:
            return tuple(probe.describe(None if where == namespace else where) for probe, where in found)

        result = Permissions(allowed=words(allowed), everyone=words(everyone))
        if epoch == self._epoch:
            self._answers[(namespace, account)] = (elsewhere, result)
        return result

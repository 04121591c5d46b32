"""The operator's CA, kept in one Secret in the operator's namespace.

Read on every use, so a CA Secret edited by hand (into garbage, or into an expired CA) is noticed at the
next reconcile and replaced, and every certificate that no longer chains to a trusted CA is reissued.
A lock makes concurrent reconciles agree on one CA.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime, timedelta

from securemodels import metrics, pki
from securemodels.config import OperatorConfig
from securemodels.desired import naming
from securemodels.k8s import events, read
from securemodels.k8s.client import Kube

log = logging.getLogger(__name__)
CA_SECRET = "securemodels-ca"  # noqa: S105 - the Secret's name


class CAStore:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self._kube = kube
        self._config = config
        self._lock = asyncio.Lock()

    async def current(self, now: datetime) -> pki.CAState:
        async with self._lock:
            secret = await self._kube.get("Secret", CA_SECRET, self._config.namespace)
            data = read.decode(secret.get("data")) if secret else None
            plan = pki.plan_ca(
                data, now, self._config.ca_key_algorithm, timedelta(hours=self._config.ca_duration_hours)
            )
            if plan.changed:
                await self._kube.apply(self._secret(plan.state))
            for note in plan.notes:
                log.info("operator CA: %s", note)
                if secret is not None:
                    await events.post(self._kube, events.about(secret), "Normal", "CARotation", note, now)
            for problem in plan.problems:
                log.warning("operator CA: %s", problem)
                if secret is not None:
                    await events.post(self._kube, events.about(secret), "Warning", "CAReplaced", problem, now)
            self._export(plan.state)
            return plan.state

    def _secret(self, state: pki.CAState) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": CA_SECRET,
                "namespace": self._config.namespace,
                "labels": naming.operator_labels("ca"),
            },
            "type": "Opaque",
            "data": {
                key: base64.b64encode(value).decode() for key, value in pki.ca_to_secret_data(state).items()
            },
        }

    @staticmethod
    def _export(state: pki.CAState) -> None:
        trusted = [pki.certificate_info(cert) for cert in state.trusted]
        metrics.CA_EXPIRY.clear()
        for info in trusted:
            metrics.CA_EXPIRY.labels(serial_number=info.serial_number).set(info.not_after.timestamp())

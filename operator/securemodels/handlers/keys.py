"""The operator's own secrets, in its namespace: the CA, the ledger of the CAs it made, and the key that
stamps what it writes (desired/canonical.py).

The CA Secret is read from the cache on every use, so one edited by hand (into garbage, into an expired
CA, or with a certificate appended) is noticed at the next reconcile. Only CAs in the ledger, a ConfigMap
kept beside the Secret, are trusted: anything else found in the Secret is reported (a Warning Event and
`securemodels_ca_untrusted_certificates_total`), taken out, and never handed to a sidecar. A lock makes
concurrent reconciles agree on one CA.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from securemodels import metrics, pki
from securemodels.config import OperatorConfig
from securemodels.desired import naming
from securemodels.k8s import events
from securemodels.k8s.cache import without_managed_fields
from securemodels.k8s.client import Kube, KubeError
from securemodels.k8s.read import Caches, decode

log = logging.getLogger(__name__)
CA_SECRET, CA_LEDGER, STAMP_KEY_SECRET = naming.CA_SECRET, naming.CA_LEDGER, naming.STAMP_KEY_SECRET
LEDGER_KEY = "fingerprints"
STAMP_KEY = "hmac.key"


class OperatorKeys:
    def __init__(self, kube: Kube, caches: Caches, config: OperatorConfig) -> None:
        self._kube, self._caches, self._config = kube, caches, config
        self._lock = asyncio.Lock()

    def _cached(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._caches[kind].get(self._config.namespace, name)

    def _object(
        self, kind: str, name: str, component: str, body: dict[str, Any], live: dict[str, Any] | None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self._config.namespace,
            "labels": naming.operator_labels(component),
        }
        if live is not None:
            metadata["resourceVersion"] = live["metadata"]["resourceVersion"]
        return {"apiVersion": "v1", "kind": kind, "metadata": metadata, **body}

    async def _write(self, manifest: dict[str, Any], live: dict[str, Any] | None) -> None:
        written = await (self._kube.replace(manifest) if live is not None else self._kube.create(manifest))
        # The watch brings it too; keeping it now means the next reconcile does not read the old one.
        self._caches[manifest["kind"]].offer(without_managed_fields(written))

    # -- the CA ------------------------------------------------------------------------------------

    async def ca(self, now: datetime) -> pki.CAState:
        async with self._lock:
            secret = self._cached("Secret", CA_SECRET)
            ledger = self._cached("ConfigMap", CA_LEDGER)
            stored = decode(secret.get("data")) if secret else {}
            known = (
                frozenset(((ledger.get("data") or {}).get(LEDGER_KEY) or "").split())
                if ledger is not None
                else None
            )
            checked = pki.keep_known_cas(stored, known) if secret else pki.LedgerCheck({}, ())
            plan = pki.plan_ca(
                checked.data or None,
                now,
                self._config.ca_key_algorithm,
                timedelta(hours=self._config.ca_duration_hours),
            )
            fingerprints = pki.ledger_of(plan.state)
            if known != fingerprints:
                # The ledger first: a CA must be known before anything it signs is handed out.
                body: dict[str, Any] = {"data": {LEDGER_KEY: "\n".join(sorted(fingerprints))}}
                await self._write(self._object("ConfigMap", CA_LEDGER, "ca", body, ledger), ledger)
            wanted = pki.ca_to_secret_data(plan.state)
            if wanted != {key: bytes(value) for key, value in stored.items()}:
                body = {
                    "type": "Opaque",
                    "data": {key: base64.b64encode(value).decode() for key, value in wanted.items()},
                }
                await self._write(self._object("Secret", CA_SECRET, "ca", body, secret), secret)
            await self._report(plan, checked.untrusted, now)
            self._export(plan.state, checked.untrusted)
            return plan.state

    async def _report(self, plan: pki.CAPlan, untrusted: tuple[str, ...], now: datetime) -> None:
        secret = self._cached("Secret", CA_SECRET)
        notes = [("Normal", "CARotation", note) for note in plan.notes]
        notes += [("Warning", "CAReplaced", problem) for problem in plan.problems]
        if untrusted:  # taken out of the Secret as they are found: each finding is news
            notes.append(
                (
                    "Warning",
                    "CAUntrusted",
                    f"the CA Secret held {len(untrusted)} CA certificate(s) the operator did not make "
                    f"(SHA-256 {', '.join(item[:16] for item in untrusted)}); they are not trusted and were "
                    "removed",
                )
            )
        for event_type, reason, message in notes:
            (log.warning if event_type == "Warning" else log.info)("operator CA: %s", message)
            if secret is not None:
                await events.post(self._kube, events.about(secret), event_type, reason, message, now)

    def _export(self, state: pki.CAState, untrusted: tuple[str, ...]) -> None:
        metrics.CA_EXPIRY.clear()
        for pem in state.trusted:
            info = pki.certificate_info(pem)
            metrics.CA_EXPIRY.labels(serial_number=info.serial_number).set(info.not_after.timestamp())
        metrics.CA_UNTRUSTED_CERTIFICATES.inc(len(untrusted))

    # -- the template key ------------------------------------------------------------------------------

    async def stamp_key(self) -> bytes:
        """The HMAC key of the stamps on what the operator writes; made once. A lost or replaced key only
        re-stamps everything (a rollout of every model), it never makes a foreign change pass."""
        async with self._lock:
            secret = self._cached("Secret", STAMP_KEY_SECRET)
            key = decode((secret or {}).get("data")).get(STAMP_KEY, b"")
            if len(key) >= 32:
                return key
            key = secrets.token_bytes(32)
            body = {"type": "Opaque", "data": {STAMP_KEY: base64.b64encode(key).decode()}}
            try:
                await self._write(self._object("Secret", STAMP_KEY_SECRET, "stamp-key", body, secret), secret)
            except KubeError as error:
                if error.code != 409:
                    raise
                return await self._read_stamp_key()  # another writer won; use theirs
            return key

    async def _read_stamp_key(self) -> bytes:
        found = await self._kube.get("Secret", STAMP_KEY_SECRET, self._config.namespace)
        return decode((found or {}).get("data")).get(STAMP_KEY, b"")

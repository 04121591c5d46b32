"""Which certificates an SMD needs now: keep the ones that are still good, issue the rest.

Pure given the CA, the certificates found in the cluster and the clock (new keys are random, nothing else
varies). A renewal changes the server certificate's fingerprint, which the pod template carries, so the
pods are replaced rather than reloaded in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from securemodels import pki
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context


@dataclass(frozen=True)
class CertificatePlan:
    server: mtls.ServerTLS
    clients: dict[str, pki.KeyPair]  # by client identity
    issued: tuple[str, ...]  # issued on schedule (first time, or due for renewal), for Normal Events
    replaced: tuple[str, ...]  # replaced early (untrusted, unreadable, expired...), for Warning Events
    next_renewal: datetime  # when the earliest of these certificates is due


def lifetimes(context: Context) -> tuple[timedelta, timedelta]:
    """Certificate lifetime, and how long before expiry to renew (default: a third of the lifetime)."""
    settings = context.spec.mtls
    lifetime = pki.parse_duration(settings.certificate_duration)
    renew_before = pki.parse_duration(settings.renew_before) if settings.renew_before else lifetime / 3
    return lifetime, renew_before


def plan(
    context: Context,
    ca: pki.CAState,
    server: pki.KeyPair | None,
    clients: Mapping[str, pki.KeyPair | None],
) -> CertificatePlan:
    lifetime, renew_before = lifetimes(context)
    algorithm = context.config.ca_key_algorithm
    issued: list[str] = []
    replaced: list[str] = []
    dns_names = mtls.dns_names(context)
    reason = pki.renewal_reason(server, ca, context.now, renew_before, dns_names=dns_names)
    if server is None or reason is not None:
        server = pki.issue_server_certificate(ca, dns_names, context.now, lifetime, algorithm)
        reason = reason or "missing"
        (issued if pki.is_scheduled(reason) else replaced).append(f"issued the server certificate ({reason})")
    issued_clients: dict[str, pki.KeyPair] = {}
    for identity, pair in sorted(clients.items()):
        reason = pki.renewal_reason(pair, ca, context.now, renew_before, common_name=identity)
        if pair is None or reason is not None:
            pair = pki.issue_client_certificate(ca, identity, context.now, lifetime, algorithm)
            reason = reason or "missing"
            note = f"issued the client certificate {identity} ({reason})"
            (issued if pki.is_scheduled(reason) else replaced).append(note)
        issued_clients[identity] = pair
    infos = [pki.certificate_info(pair.cert_pem) for pair in (server, *issued_clients.values())]
    server_info = infos[0]
    return CertificatePlan(
        server=mtls.ServerTLS(
            pair=server, bundle_pem=ca.bundle_pem(), fingerprint=server_info.sha256_fingerprint
        ),
        clients=issued_clients,
        issued=tuple(issued),
        replaced=tuple(replaced),
        next_renewal=min(info.not_after - renew_before for info in infos),
    )

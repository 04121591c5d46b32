"""Every Prometheus metric the operator exports, defined once.

Per-SMD series carry `namespace` and `name` labels and are removed when the SMD goes away, so a deleted
model never lingers as "non-compliant" in dashboards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

COMPLIANCE_STATUS = Gauge(
    "securemodels_compliance_status",
    "1 when the control passes for the SMD, 0 when it fails or is weakened on purpose.",
    ["namespace", "name", "control"],
    registry=REGISTRY,
)
CONTROL_WEAKENED = Gauge(
    "securemodels_control_weakened",
    "1 for each weakening an SMD opted in to (the weakening label names it).",
    ["namespace", "name", "control", "weakening"],
    registry=REGISTRY,
)
COMPLIANT = Gauge(
    "securemodels_compliant",
    "1 when every control passes for the SMD.",
    ["namespace", "name"],
    registry=REGISTRY,
)
READY = Gauge(
    "securemodels_ready", "1 when the SMD's phase is Ready.", ["namespace", "name"], registry=REGISTRY
)
QUARANTINED = Gauge(
    "securemodels_quarantined",
    "1 while the SMD is quarantined (spec.quarantine): network cut, clients refused, pods kept.",
    ["namespace", "name"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "securemodels_reconcile_duration_seconds",
    "Time to reconcile one SMD.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "securemodels_reconcile_errors_total",
    "Reconciles that failed and will be retried.",
    ["reason"],
    registry=REGISTRY,
)
DRIFT_CORRECTIONS = Counter(
    "securemodels_drift_corrections_total",
    "Objects changed or deleted outside the operator and put back as declared.",
    ["kind"],
    registry=REGISTRY,
)
CERTIFICATE_EXPIRY = Gauge(
    "securemodels_certificate_expiry_timestamp_seconds",
    "Expiry of the SMD's server certificate (Unix time).",
    ["namespace", "name"],
    registry=REGISTRY,
)
CERTIFICATE_RENEWAL = Gauge(
    "securemodels_certificate_renewal_timestamp_seconds",
    "When the earliest of the SMD's certificates (server or client) is due for renewal (Unix time).",
    ["namespace", "name"],
    registry=REGISTRY,
)
WEIGHTS_VERIFIED = Gauge(
    "securemodels_weights_verified_info",
    "1 for the signed manifest digest and signer key that the running pods of the SMD's current template "
    "verified before the model started.",
    ["namespace", "name", "manifest_sha256", "signer_key_sha256"],
    registry=REGISTRY,
)
WEIGHTS_VERIFICATION_FAILED_PODS = Gauge(
    "securemodels_weights_verification_failed_pods",
    "Pods of the SMD whose weights failed signature verification (they never start the model).",
    ["namespace", "name"],
    registry=REGISTRY,
)
CA_EXPIRY = Gauge(
    "securemodels_ca_expiry_timestamp_seconds",
    "Expiry of each CA certificate the operator trusts (Unix time).",
    ["serial_number"],
    registry=REGISTRY,
)
MANAGED_RESOURCES = Gauge(
    "securemodels_managed_resources", "SecureModelDeployments the operator manages.", registry=REGISTRY
)
API_WRITES = Counter(
    "securemodels_api_writes_total",
    "Write requests sent to the API server.",
    ["verb", "kind"],
    registry=REGISTRY,
)

API_REQUESTS = Counter(
    "securemodels_api_requests_total",
    "Read requests sent to the API server (watches are counted when they start).",
    ["verb", "kind"],
    registry=REGISTRY,
)
API_DRY_RUNS = Counter(
    "securemodels_api_dry_runs_total",
    "Server-side dry runs: a write checked, or an object's canonical form asked for, without a change.",
    ["verb", "kind"],
    registry=REGISTRY,
)
API_ACCESS_REVIEWS = Counter(
    "securemodels_api_access_reviews_total",
    "SubjectAccessReviews and SelfSubjectAccessReviews sent to the API server.",
    registry=REGISTRY,
)
CA_UNTRUSTED_CERTIFICATES = Counter(
    "securemodels_ca_untrusted_certificates_total",
    "CA certificates found in the CA Secret that the operator did not make: taken out, never trusted.",
    registry=REGISTRY,
)
CACHE_SYNCED = Gauge(
    "securemodels_cache_synced",
    "1 when the watch-fed cache of the kind has listed everything once and is being kept current.",
    ["kind"],
    registry=REGISTRY,
)

LEASE_WRITES = Counter(
    "securemodels_leader_lease_writes_total",
    "Writes of the leader-election Lease (taking and renewing it), apart from the API writes above.",
    registry=REGISTRY,
)
LEADER = Gauge(
    "securemodels_leader",
    "1 on the replica that holds the leader Lease and reconciles, 0 on a standby.",
    registry=REGISTRY,
)
OPERATOR_READY = Gauge(
    "securemodels_operator_ready",
    "1 while the replica is ready (its /readyz answers 200), 0 while it is not.",
    registry=REGISTRY,
)

# The per-SMD series each SMD has now, so that replacing or dropping them costs what the SMD has, not
# what the whole fleet has: (gauge, labels after namespace and name).
Series = tuple[Gauge, tuple[str, ...]]
_SMD_SERIES: dict[tuple[str, str], set[Series]] = {}


def export_smd(
    namespace: str,
    name: str,
    values: Iterable[tuple[Gauge, tuple[str, ...], float]],
    keep: Iterable[Gauge] = (),
) -> None:
    """Set the SMD's per-SMD series to `values` (each a gauge, its labels after namespace and name, and
    the value); the SMD's other series go, but those of the gauges in `keep`, which stay as last set."""
    current: set[Series] = set()
    for gauge, labels, value in values:
        gauge.labels(namespace, name, *labels).set(value)
        current.add((gauge, labels))
    kept = set(keep)
    previous = _SMD_SERIES.get((namespace, name), set())
    for gauge, labels in previous - current:
        if gauge in kept:
            current.add((gauge, labels))
        else:
            _remove(gauge, namespace, name, labels)
    _SMD_SERIES[(namespace, name)] = current


def forget(namespace: str, name: str) -> None:
    """Drop every series of the SMD (it is gone, or another replica reports it now)."""
    for gauge, labels in _SMD_SERIES.pop((namespace, name), set()):
        _remove(gauge, namespace, name, labels)


def _remove(gauge: Gauge, namespace: str, name: str, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(namespace, name, *labels)

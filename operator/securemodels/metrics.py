"""Every Prometheus metric the operator exports, defined once.

Per-SMD series carry `namespace` and `name` labels and are removed when the SMD goes away, so a deleted
model never lingers as "non-compliant" in dashboards.
"""

from __future__ import annotations

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

_PER_SMD = (COMPLIANCE_STATUS, CONTROL_WEAKENED, COMPLIANT, READY, CERTIFICATE_EXPIRY, CERTIFICATE_RENEWAL)


def forget(namespace: str, name: str, keep: frozenset[tuple[str, ...]] = frozenset()) -> None:
    """Drop the SMD's series, except the label sets in `keep` (the ones just set)."""
    for gauge in _PER_SMD:
        for labels in _label_sets(gauge):
            if labels[:2] == (namespace, name) and labels not in keep:
                gauge.remove(*labels)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(sample.labels.values()) for metric in gauge.collect() for sample in metric.samples]

"""Per-SMD series: a deleted SMD leaves none behind, and a pass leaves exactly the ones it set."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from prometheus_client import Gauge

from securemodels import metrics

_counter = itertools.count()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace label no other test uses; its series are removed afterwards."""
    name = f"metrics-test-{next(_counter)}"
    yield name
    for gauge in (
        metrics.COMPLIANCE_STATUS,
        metrics.CONTROL_WEAKENED,
        metrics.COMPLIANT,
        metrics.READY,
        metrics.CERTIFICATE_EXPIRY,
    ):
        for labels in series(gauge, name):
            gauge.remove(*labels)


def series(gauge: Gauge, namespace: str) -> set[tuple[str, ...]]:
    return {
        tuple(sample.labels.values())
        for metric in gauge.collect()
        for sample in metric.samples
        if sample.labels.get("namespace") == namespace
    }


def populate(namespace: str, name: str) -> None:
    metrics.export_smd(
        namespace,
        name,
        [
            (metrics.COMPLIANCE_STATUS, ("mtls",), 1),
            (metrics.COMPLIANCE_STATUS, ("rbac",), 1),
            (metrics.CONTROL_WEAKENED, ("mtls", "TLS12"), 1),
            (metrics.COMPLIANT, (), 1),
            (metrics.READY, (), 1),
            (metrics.CERTIFICATE_EXPIRY, (), 2e9),
        ],
    )


def test_forget_removes_every_series_of_the_smd(namespace: str) -> None:
    populate(namespace, "fraud")

    metrics.forget(namespace, "fraud")

    assert series(metrics.COMPLIANCE_STATUS, namespace) == set()
    assert series(metrics.CONTROL_WEAKENED, namespace) == set()
    assert series(metrics.COMPLIANT, namespace) == set()
    assert series(metrics.READY, namespace) == set()
    assert series(metrics.CERTIFICATE_EXPIRY, namespace) == set()


def test_forget_leaves_other_smds_alone(namespace: str) -> None:
    populate(namespace, "fraud")
    populate(namespace, "fraud-2")
    populate(f"{namespace}-other", "fraud")

    metrics.forget(namespace, "fraud")
    metrics.forget(f"{namespace}-other", "fraud")

    assert series(metrics.COMPLIANCE_STATUS, namespace) == {
        (namespace, "fraud-2", "mtls"),
        (namespace, "fraud-2", "rbac"),
    }
    assert series(metrics.COMPLIANT, namespace) == {(namespace, "fraud-2")}
    assert series(metrics.CONTROL_WEAKENED, namespace) == {(namespace, "fraud-2", "mtls", "TLS12")}


def test_a_pass_leaves_exactly_the_series_it_set_but_those_it_keeps(namespace: str) -> None:
    populate(namespace, "fraud")

    metrics.export_smd(
        namespace,
        "fraud",
        [(metrics.COMPLIANCE_STATUS, ("rbac",), 0), (metrics.COMPLIANT, (), 0)],
        keep=(metrics.CERTIFICATE_EXPIRY,),
    )

    assert series(metrics.COMPLIANCE_STATUS, namespace) == {(namespace, "fraud", "rbac")}
    assert series(metrics.CONTROL_WEAKENED, namespace) == set()
    assert series(metrics.COMPLIANT, namespace) == {(namespace, "fraud")}
    assert series(metrics.READY, namespace) == set()
    assert series(metrics.CERTIFICATE_EXPIRY, namespace) == {(namespace, "fraud")}
    metrics.forget(namespace, "fraud")
    assert series(metrics.CERTIFICATE_EXPIRY, namespace) == set()


def test_metric_names_carry_the_prefix() -> None:
    names = {metric.name for metric in metrics.REGISTRY.collect()}

    assert names
    assert all(name.startswith("securemodels_") for name in names)
    assert {
        "securemodels_compliance_status",
        "securemodels_compliant",
        "securemodels_reconcile_duration_seconds",
    } <= names

"""The suite's own footing: the chart's admission policy is enforced, and an admin is not held by it."""

from __future__ import annotations

import pytest

from support.access import AdmissionPolicy
from support.kube import Kubectl
from support.manifests import smd

pytestmark = pytest.mark.integration


def test_an_admin_may_create_a_weakened_smd_the_policy_would_refuse_others(
    kubectl: Kubectl, namespace: str, admission_policy: AdmissionPolicy
) -> None:
    manifest = smd("wide", namespace, mtls={"minTLSVersion": "1.2"})
    kubectl.apply(manifest)
    assert kubectl.get("smd", "wide", namespace) is not None

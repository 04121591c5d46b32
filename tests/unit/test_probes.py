"""Slow starters: a startup budget that holds liveness back, readiness and liveness on their own paths,
and a progress deadline that never fires while a model still has time."""

from __future__ import annotations

from typing import Any

import pytest

from securemodels.api.v1alpha1 import HEALTH_PORT, seconds
from securemodels.desired import probes, workload
from securemodels.desired.controls import mtls
from securemodels.desired.nginx import HEALTH_TIMEOUT_SECONDS, MODEL_HEALTH_PATH, MODEL_LIVENESS_PATH
from unit.builders import SERVER, container, context


def model(**spec: Any) -> dict[str, Any]:
    return container(workload.deployment(context(**spec), SERVER), "model")


def deadline(**spec: Any) -> int:
    result: int = workload.deployment(context(**spec), SERVER)["spec"]["progressDeadlineSeconds"]
    return result


def budget(probe: dict[str, Any]) -> int:
    """How long the kubelet lets the startup probe fail before it restarts the container."""
    return int(probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"])


def test_every_check_goes_through_the_sidecar_health_server() -> None:
    checks = model()

    assert checks["startupProbe"]["httpGet"] == {"path": MODEL_HEALTH_PATH, "port": HEALTH_PORT}
    assert checks["readinessProbe"]["httpGet"] == {"path": MODEL_HEALTH_PATH, "port": HEALTH_PORT}
    assert checks["livenessProbe"]["httpGet"] == {"path": MODEL_LIVENESS_PATH, "port": HEALTH_PORT}
    assert MODEL_LIVENESS_PATH != MODEL_HEALTH_PATH


def test_the_sidecar_passes_each_check_to_the_models_own_path() -> None:
    conf = mtls.nginx_conf(
        context(model={"healthPath": "/v1/health/ready", "livenessPath": "/v1/health/live"})
    )

    assert (
        f"location = {MODEL_HEALTH_PATH} {{\n            proxy_pass http://securemodels_model/v1/health/ready;"
        in conf
    )
    assert (
        f"location = {MODEL_LIVENESS_PATH} {{\n            proxy_pass http://securemodels_model/v1/health/live;"
        in conf
    )


@pytest.mark.parametrize("timeout", ["30s", "45s", "5m", "10m", "90m", "4h"])
def test_the_startup_probe_allows_the_whole_budget_and_little_more(timeout: str) -> None:
    startup = model(model={"startupTimeout": timeout})["startupProbe"]

    assert seconds(timeout) <= budget(startup) < seconds(timeout) + probes.STARTUP_PERIOD_SECONDS


def test_the_default_budget_is_five_minutes() -> None:
    assert budget(model()["startupProbe"]) == 300


def test_liveness_and_readiness_wait_for_startup_not_for_a_fixed_delay() -> None:
    checks = model(model={"startupTimeout": "20m"})

    assert "initialDelaySeconds" not in checks["livenessProbe"]
    assert "initialDelaySeconds" not in checks["readinessProbe"]


def test_a_check_times_out_after_the_sidecar_has_answered() -> None:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert model()[probe]["timeoutSeconds"] > HEALTH_TIMEOUT_SECONDS


@pytest.mark.parametrize("timeout", ["30s", "5m", "25m", "4h"])
def test_the_progress_deadline_never_fires_before_the_budget_is_spent(timeout: str) -> None:
    startup = model(model={"startupTimeout": timeout})["startupProbe"]

    assert deadline(model={"startupTimeout": timeout}) >= budget(startup) + probes.PULL_AND_SCHEDULE_SECONDS


def test_the_progress_deadline_is_at_least_kubernetes_default() -> None:
    assert deadline(model={"startupTimeout": "30s"}) >= 600


def test_the_sidecar_keeps_its_own_quick_checks() -> None:
    sidecar = container(workload.deployment(context(model={"startupTimeout": "4h"}), SERVER), mtls.SIDECAR)

    assert "startupProbe" not in sidecar
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/sidecar-healthz"

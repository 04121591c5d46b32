"""How the kubelet and the Deployment controller judge a model that may take long to start.

A large model loads for minutes before it answers anything. A startup probe holds liveness back for the
SMD's startup budget, so a loading model is not restarted; once it is ready, readiness and liveness are
checked on their own paths. The model listens on 127.0.0.1 only, so every check goes through the
sidecar's health server (desired/nginx.py), which passes it to the model's paths. The Deployment's
progress deadline outlasts the budget: a rollout is reported stuck only after a model had all its time.
"""

from __future__ import annotations

import math
from typing import Any

from securemodels.api.v1alpha1 import HEALTH_PORT, seconds
from securemodels.desired.model import Context
from securemodels.desired.nginx import HEALTH_TIMEOUT_SECONDS, MODEL_HEALTH_PATH, MODEL_LIVENESS_PATH

STARTUP_PERIOD_SECONDS = 10
# The kubelet waits a little longer than the sidecar, so a slow model gets the sidecar's 504, not a
# dropped connection.
PROBE_TIMEOUT_SECONDS = HEALTH_TIMEOUT_SECONDS + 1
# Scheduling and pulling a large image come before the startup budget, and get Kubernetes' default
# progress deadline of ten minutes.
PULL_AND_SCHEDULE_SECONDS = 600


def _http(path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HEALTH_PORT}, "timeoutSeconds": PROBE_TIMEOUT_SECONDS}


def startup_failure_threshold(context: Context) -> int:
    """How many failed startup checks, one every STARTUP_PERIOD_SECONDS, make the whole budget."""
    return max(1, math.ceil(seconds(context.spec.model.startup_timeout) / STARTUP_PERIOD_SECONDS))


def model_probes(context: Context) -> dict[str, Any]:
    """The model container's startup, readiness and liveness probes."""
    return {
        "startupProbe": {
            **_http(MODEL_HEALTH_PATH),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": startup_failure_threshold(context),
        },
        "readinessProbe": {**_http(MODEL_HEALTH_PATH), "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**_http(MODEL_LIVENESS_PATH), "periodSeconds": 20, "failureThreshold": 6},
    }


def progress_deadline_seconds(context: Context) -> int:
    """The Deployment's progress deadline: the startup budget, and time to schedule and pull before it."""
    return startup_failure_threshold(context) * STARTUP_PERIOD_SECONDS + PULL_AND_SCHEDULE_SECONDS

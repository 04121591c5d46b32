"""The controls, in the order status, docs and metrics list them."""

from __future__ import annotations

from securemodels.desired.controls import (
    image_digest,
    mtls,
    network,
    pod_security,
    rbac,
    residency,
    storage,
    weights,
)
from securemodels.desired.controls.base import Control

CONTROLS: tuple[Control, ...] = (image_digest, network, mtls, rbac, storage, residency, pod_security, weights)
CONDITION_OF = {control.NAME: control.CONDITION for control in CONTROLS}

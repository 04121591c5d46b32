from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcluster import LocalCluster
from securemodels.config import OperatorConfig
from support.operator import RESYNC_SECONDS, FakeClock, RunningOperator
from support.paths import OPERATOR_NAMESPACE


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, clock: FakeClock) -> Iterator[RunningOperator]:
    """The operator, in-process, with a short resync so drift shows up quickly."""
    config = OperatorConfig(namespace=OPERATOR_NAMESPACE, resync_seconds=RESYNC_SECONDS)
    running = RunningOperator(cluster.kubeconfig, config, clock).start()
    yield running
    running.stop()

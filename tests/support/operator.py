"""Run the operator in-process, in its own thread and event loop, against the test control plane."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from localcluster import free_port
from securemodels.config import OperatorConfig
from securemodels.handlers.runtime import run

# Short, so that tests see drift corrected within seconds.
RESYNC_SECONDS = 2.0


@dataclass
class FakeClock:
    """Real time plus an offset that tests advance, so nothing sleeps waiting for expiry."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


class RunningOperator:
    def __init__(self, kubeconfig: Path, config: OperatorConfig, clock: FakeClock | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.config = config
        self.clock = clock or FakeClock()
        self.port = free_port()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(
                run(
                    self.config,
                    kubeconfig=self.kubeconfig,
                    clock=self.clock,
                    http_port=self.port,
                    stop=self._stop,
                    started=self._started,
                )
            )
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread by start() and stop()
            self.error = error
            self._started.set()

    def start(self, timeout: float = 30.0) -> RunningOperator:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("operator did not start")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, metric_name: str, **labels: str) -> float | None:
        """The sum of the samples from /metrics that carry these labels; None when there is none."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.http("/metrics")
        values = [
            float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == metric_name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None

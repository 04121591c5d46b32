"""Quarantine in the real nginx, with the rendered configuration: the flag file the operator adds to
the sidecar's ConfigMap makes the running sidecar refuse a client it accepted a moment before, without
a reload or a restart; taking it away lets the client in again."""

from __future__ import annotations

from pathlib import Path

from mtls.sidecar import Certificates, Client, ModelServer, StartSidecar
from securemodels.desired.nginx import QUARANTINE_FILE


def test_a_quarantine_refuses_an_accepted_client_at_once_and_its_lift_lets_it_in_again(
    start_sidecar: StartSidecar, certificates: Certificates, model: ModelServer, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    client = Client(tmp_path, certificates.ca.bundle_pem(), certificates.client)
    assert client.get(sidecar.tls_port).status == 200
    served = len(model.seen)

    # As the kubelet does when the ConfigMap changes: the file appears beside nginx.conf.
    flag = sidecar.base / QUARANTINE_FILE
    flag.write_text("INC-4711")
    refused = client.get(sidecar.tls_port)

    assert refused.status == 403, refused
    assert len(model.seen) == served  # the model never saw the request
    assert sidecar.process is not None and sidecar.process.poll() is None  # not restarted, not reloaded

    flag.unlink()
    assert client.get(sidecar.tls_port).status == 200

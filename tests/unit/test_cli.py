"""The `securemodels` command line: render an SMD offline, print the CRD."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from securemodels import cli
from securemodels.api import crdgen
from support.paths import EXAMPLES
from unit.builders import spec_dict

BASIC_KINDS = {
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
}


@pytest.fixture(autouse=True)
def no_pod_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)


def smd_file(tmp_path: Path, spec: dict[str, object], name: str = "fraud") -> Path:
    path = tmp_path / "smd.yaml"
    document = {
        "apiVersion": "securemodels.io/v1alpha1",
        "kind": "SecureModelDeployment",
        "metadata": {"name": name, "namespace": "ml-prod"},
        "spec": spec,
    }
    path.write_text(
        yaml.safe_dump_all(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml-prod"}}, document]
        )
    )
    return path


def render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["render", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_render_prints_every_child_of_the_basic_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render(capsys, "-f", str(EXAMPLES / "basic.yaml"))
    manifests = list(yaml.safe_load_all(out))

    assert (code, err) == (0, "")
    assert {item["kind"] for item in manifests} == BASIC_KINDS
    assert all(item["metadata"]["namespace"] == "ml-prod" for item in manifests)
    assert manifests[-1]["kind"] == "Deployment"


def test_render_never_prints_key_material(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = render(capsys, "-f", str(EXAMPLES / "basic.yaml"))
    tls = next(item for item in yaml.safe_load_all(out) if item["kind"] == "Secret")

    assert "PRIVATE KEY" not in out
    assert set(tls["data"]) == {"ca.crt"}


def test_render_includes_the_volume_claim_when_storage_is_declared(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = smd_file(tmp_path, spec_dict(storage={"size": "1Gi", "storageClassName": "encrypted-gp3"}))
    code, out, _ = render(capsys, "-f", str(path))

    assert code == 0
    assert "PersistentVolumeClaim" in {item["kind"] for item in yaml.safe_load_all(out)}


def test_render_reads_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((EXAMPLES / "basic.yaml").read_text()))
    code, out, _ = render(capsys, "-f", "-")

    assert code == 0
    assert "kind: Deployment" in out


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (spec_dict(model={"port": 0}), "spec.model.port:"),
        (spec_dict(model={"metricsPort": "many"}), "spec.model.metricsPort:"),
        (spec_dict(network={"ingress": [{"from": [{"cidr": 1}]}]}), "spec.network.ingress.0.from.0.cidr:"),
        (spec_dict(mtls={"minTLSVersion": "1.0"}), "spec.mtls.minTLSVersion:"),
        ({}, "spec.model:"),
    ],
    ids=["port", "metricsPort", "peer cidr", "minTLSVersion", "no model"],
)
def test_render_reports_bad_specs_by_field_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: dict[str, object], path: str
) -> None:
    code, out, err = render(capsys, "-f", str(smd_file(tmp_path, spec)))

    assert code == 1
    assert out == ""
    assert err.startswith(f"fraud: {path}")  # the SMD, then the field


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("kind: SecureModelDeployment\n", "document 1: metadata.name is required"),
        ("- a list\n", "document 1 is not an object"),
        ("a: [b\n", "while parsing a flow sequence"),
        (
            "kind: SecureModelDeployment\nmetadata: {name: default}\nspec: {}\n",
            "document 1 (default): metadata.name must be",
        ),
    ],
    ids=["no name", "not an object", "not YAML", "reserved name"],
)
def test_render_refuses_documents_that_are_not_smds_with_one_clean_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, document: str, message: str
) -> None:
    path = tmp_path / "smd.yaml"
    path.write_text(document)

    code, out, err = render(capsys, "-f", str(path))

    assert (code, out) == (1, "")
    assert message in err
    assert "Traceback" not in err


def test_render_refuses_what_the_operator_would_block(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Three /9s cover more than a /8: each CIDR passes the CRD, together they reach most of IPv4."""
    peers = [{"cidr": cidr} for cidr in ("0.0.0.0/9", "64.0.0.0/9", "128.0.0.0/9")]
    spec = spec_dict(network={"egress": [{"to": peers, "ports": [{"port": 443}]}]})

    code, out, err = render(capsys, "-f", str(smd_file(tmp_path, spec)))

    assert (code, out) == (1, "")
    assert err.startswith("fraud: NetworkTooBroad: EgressToAnywhere")


def test_crd_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0
    assert capsys.readouterr().out == crdgen.crd_yaml()


def test_crd_writes_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "crd.yaml"

    assert cli.main(["crd", "--output", str(target)]) == 0
    assert target.read_text() == crdgen.crd_yaml()
    assert capsys.readouterr().out == ""

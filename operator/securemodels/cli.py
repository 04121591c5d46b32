"""`securemodels`: run the operator, print the CRD, render an SMD offline, audit a cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from securemodels import audit, desired
from securemodels.api import crdgen, v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired.controls import image_digest, mtls, network, rbac, weights
from securemodels.desired.model import Context, Observed
from securemodels.desired.naming import Owner

OFFLINE_FINGERPRINT = "issued-by-the-operator"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so log pipelines need no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # kopf logs every watch reconnect and httpx2 every request at INFO; keep their warnings and errors.
    for noisy in ("kopf", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load_config(path: str | None) -> OperatorConfig:
    return OperatorConfig.load(
        Path(path).read_text() if path else None, namespace=os.environ.get("POD_NAMESPACE")
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from securemodels.handlers.runtime import run  # kopf is imported only when the operator runs

    _configure_logging(args.log_level)
    config = _load_config(args.config)
    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    asyncio.run(run(config, kubeconfig=kubeconfig, http_port=args.http_port))
    return 0


def _cmd_crd(args: argparse.Namespace) -> int:
    text = crdgen.crd_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


class RenderError(ValueError):
    """A document cannot be rendered: the message names the document and every problem found."""


# Preflights that need nothing from a cluster, so that render refuses what the operator would block.
_OFFLINE_PREFLIGHTS = (image_digest, network, rbac)


def _owner(index: int, document: Any) -> Owner:
    where = f"document {index}"
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise RenderError(f"{where}: metadata.name is required")
    name = metadata["name"]
    if (problem := v1alpha1.name_problem(name)) is not None:
        raise RenderError(f"{where} ({name}): {problem}")
    return Owner(
        name=name,
        namespace=str(metadata.get("namespace") or "default"),
        uid=str(metadata.get("uid") or "00000000-0000-0000-0000-000000000000"),
        generation=int(metadata.get("generation") or 1),
    )


def render_documents(documents: Iterable[Any], config: OperatorConfig) -> list[dict[str, Any]]:
    """Every object the operator would create in the SMDs' namespaces, without a cluster. Raises
    RenderError for a document the API server would refuse or the operator would block.

    Key material does not exist offline: the TLS Secret is shown without certificates (the operator's CA
    fills it), and client certificates (delivered into the clients' namespaces) are left out.
    """
    rendered: list[dict[str, Any]] = []
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise RenderError(f"document {index} is not an object")
        if document.get("kind") != v1alpha1.KIND:
            continue
        owner = _owner(index, document)
        try:
            spec = v1alpha1.SecureModelDeploymentSpec.model_validate(document.get("spec") or {})
        except ValidationError as error:
            raise RenderError(
                f"{owner.name}: " + v1alpha1.describe(error).replace("; ", f"\n{owner.name}: ")
            ) from None
        context = Context(owner=owner, spec=spec, config=config, now=datetime.now(UTC))
        blockers = [
            found for control in _OFFLINE_PREFLIGHTS if (found := control.preflight(context, Observed()))
        ]
        if (found := weights.offline_preflight(context)) is not None:
            blockers.append(found)
        if blockers:
            raise RenderError("\n".join(f"{owner.name}: {item.reason}: {item.message}" for item in blockers))
        server = mtls.ServerTLS(pair=None, bundle_pem=b"", fingerprint=OFFLINE_FINGERPRINT)
        rendered += desired.build(context, server, clients={}).owned
    return rendered


def _cmd_render(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    try:
        source = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        manifests = render_documents(yaml.safe_load_all(source), config)
    except (OSError, yaml.YAMLError, RenderError) as error:
        print(error, file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from securemodels.k8s.client import Kube, KubeError, load_config

    async def listed() -> list[dict[str, Any]]:
        kube = Kube(load_config(Path(args.kubeconfig) if args.kubeconfig else None))
        try:
            return await kube.list(v1alpha1.KIND, args.namespace)
        finally:
            await kube.close()

    try:
        models = audit.fleet(asyncio.run(listed()))
    except (KubeError, OSError, ValueError) as error:
        print(f"cannot list SecureModelDeployments: {error}", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    if args.output == "json":
        sys.stdout.write(audit.as_json(models, now))
    elif args.output == "markdown":
        sys.stdout.write(audit.as_markdown(models, now))
    else:
        sys.stdout.write(audit.as_table(models))
    return 0 if audit.all_compliant(models) else 1


def _cmd_verify_weights(args: argparse.Namespace) -> int:
    from securemodels import weights_verifier

    termination_log = Path(args.termination_log)
    try:
        found = weights_verifier.verify(
            Path(args.model),
            Path(args.signature),
            trust=Path(args.public_key or args.certificate_chain),
            certificate_chain=args.certificate_chain is not None,
            trust_sha256=args.trust_sha256,
        )
    except weights_verifier.VerificationError as error:
        print(f"verification failed: {error}", file=sys.stderr)
        weights_verifier.report(f"verification failed: {error}", termination_log)
        return 1
    print(found.as_json())
    weights_verifier.report(found.as_json(), termination_log)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="securemodels", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator")
    run.add_argument("--config", help="operator configuration file (YAML)")
    run.add_argument("--kubeconfig", help="kubeconfig; default: in-cluster, then $KUBECONFIG")
    run.add_argument("--http-port", type=int, default=8080, help="metrics and probes port (default 8080)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(handler=_cmd_run)

    crd = commands.add_parser("crd", help="print the CustomResourceDefinition generated from the API models")
    crd.add_argument("--output", "-o", help="write to this file instead of stdout")
    crd.set_defaults(handler=_cmd_crd)

    render = commands.add_parser("render", help="print the objects an SMD becomes, without a cluster")
    render.add_argument("--filename", "-f", required=True, help="SMD manifest file, or - for stdin")
    render.add_argument("--config", help="operator configuration file (YAML)")
    render.set_defaults(handler=_cmd_render)

    audit_command = commands.add_parser(
        "audit",
        help="the fleet's compliance, control by control, with the framework requirements each helps meet",
        description="Exit code 0 when every SMD is compliant, 1 when one is not, 2 when the SMDs cannot "
        "be read.",
    )
    audit_command.add_argument("--namespace", "-n", help="only this namespace")
    audit_command.add_argument("--kubeconfig", help="kubeconfig; default: in-cluster, then $KUBECONFIG")
    audit_command.add_argument(
        "--output", "-o", default="table", choices=["table", "json", "markdown"], help="default: table"
    )
    audit_command.set_defaults(handler=_cmd_audit)

    verify = commands.add_parser(
        "verify-weights",
        help="verify model weights against their OpenSSF Model Signing signature (the init container)",
    )
    verify.add_argument("model", help="directory of the weights")
    verify.add_argument("--signature", required=True, help="the signature (a Sigstore bundle)")
    trust = verify.add_mutually_exclusive_group(required=True)
    trust.add_argument("--public-key", help="PEM elliptic-curve public key of the signer")
    trust.add_argument("--certificate-chain", help="PEM certificates the signing certificate chains to")
    verify.add_argument(
        "--trust-sha256", required=True, help="SHA-256 the key or chain file must have (the operator's pin)"
    )
    verify.add_argument(
        "--termination-log",
        default="/dev/termination-log",
        help="where the outcome goes for the kubelet (written only when it exists)",
    )
    verify.set_defaults(handler=_cmd_verify_weights)

    commands.add_parser("version", help="print the version").set_defaults(
        handler=lambda _: print(package_version("secure-model-operator")) or 0
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.handler(args)
    return result

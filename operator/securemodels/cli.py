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

from securemodels import desired
from securemodels.api import crdgen, v1alpha1
from securemodels.config import OperatorConfig
from securemodels.desired.controls import mtls
from securemodels.desired.model import Context
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


def render_documents(documents: Iterable[dict[str, Any]], config: OperatorConfig) -> list[dict[str, Any]]:
    """Every object the operator would create in the SMDs' namespaces, without a cluster.

    Key material does not exist offline: the TLS Secret is shown without certificates (the operator's CA
    fills it), and client certificates (delivered into the clients' namespaces) are left out.
    """
    rendered: list[dict[str, Any]] = []
    for document in documents:
        if not document or document.get("kind") != v1alpha1.KIND:
            continue
        metadata = document.get("metadata") or {}
        owner = Owner(
            name=metadata["name"],
            namespace=metadata.get("namespace", "default"),
            uid=metadata.get("uid", "00000000-0000-0000-0000-000000000000"),
            generation=int(metadata.get("generation", 1)),
        )
        spec = v1alpha1.SecureModelDeploymentSpec.model_validate(document.get("spec") or {})
        context = Context(owner=owner, spec=spec, config=config, now=datetime.now(UTC))
        server = mtls.ServerTLS(pair=None, bundle_pem=b"", fingerprint=OFFLINE_FINGERPRINT)
        rendered += desired.build(context, server, clients={}).owned
    return rendered


def _cmd_render(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    source = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
    try:
        manifests = render_documents(yaml.safe_load_all(source), config)
    except ValidationError as error:
        print(v1alpha1.describe(error).replace("; ", "\n"), file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from securemodels.k8s.client import Kube, load_config

    async def audit() -> list[dict[str, Any]]:
        kube = Kube(load_config(Path(args.kubeconfig) if args.kubeconfig else None))
        try:
            return await kube.list(v1alpha1.KIND, args.namespace)
        finally:
            await kube.close()

    items = asyncio.run(audit())
    rows = [("NAMESPACE", "NAME", "PHASE", "COMPLIANT", "NOT PASSING")]
    for item in items:
        status = item.get("status") or {}
        not_passing = [
            f"{c['name']}={c['status']}" for c in status.get("controls") or [] if c["status"] != "Pass"
        ]
        rows.append(
            (
                item["metadata"]["namespace"],
                item["metadata"]["name"],
                str(status.get("phase", "Unknown")),
                str(status.get("compliant", "Unknown")),
                ", ".join(not_passing) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0 if all((item.get("status") or {}).get("compliant") for item in items) else 1


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

    audit = commands.add_parser("audit", help="list SMDs and the controls that do not pass")
    audit.add_argument("--namespace", "-n", help="only this namespace")
    audit.add_argument("--kubeconfig", help="kubeconfig; default: in-cluster, then $KUBECONFIG")
    audit.set_defaults(handler=_cmd_audit)

    commands.add_parser("version", help="print the version").set_defaults(
        handler=lambda _: print(package_version("secure-model-operator")) or 0
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.handler(args)
    return result

"""`make bench`: run every benchmark on a fresh local control plane and rewrite BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import bench_pki, data_path, operator_bench, sidecar_bench
from localcluster import running_cluster

ROOT = Path(__file__).resolve().parents[1]
SMD_COUNT = int(os.environ.get("BENCH_SMDS", "100"))
CERT_COUNT = int(os.environ.get("BENCH_CERTS", "1000"))


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [header, tuple("---" for _ in header), *rows]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="securemodels-bench-") as temp, running_cluster() as cluster:
        operator_bench.prepare(cluster)
        print(f"operator: {SMD_COUNT} SMDs to Ready ...", flush=True)
        tamperings: list[tuple[str, float, float | None]] = []
        operator = operator_bench.operator_run(cluster, SMD_COUNT, Path(temp), tamperings)
        print("baseline: the same children applied by a plain client ...", flush=True)
        baseline = operator_bench.baseline_run(cluster, SMD_COUNT)
    print(f"pki: {CERT_COUNT} server certificates per algorithm ...", flush=True)
    certificates = bench_pki.run(CERT_COUNT)
    print("data path: through the sidecar and direct, on the real node ...", flush=True)
    through_sidecar = data_path.section(data_path.measure())
    print("sidecar: its own cost on loopback, with the rendered nginx.conf ...", flush=True)
    sidecar_cost = sidecar_bench.section(sidecar_bench.measure())
    ratio = operator["operator_seconds_to_ready"] / baseline["baseline_seconds_to_available"]
    workers, resync = operator_bench.WORKERS, operator_bench.RESYNC_SECONDS
    fleet = table(
        ("measurement", "value"),
        [
            (
                f"operator: `kubectl apply` of {SMD_COUNT} SMDs until all are Ready",
                f"{operator['operator_seconds_to_ready']:.1f} s",
            ),
            (
                f"plain client ({workers} workers): create of the same "
                f"{baseline['baseline_objects']:.0f} child objects",
                f"{baseline['baseline_seconds_to_apply']:.1f} s",
            ),
            (
                "plain client: apply, then every Deployment available",
                f"{baseline['baseline_seconds_to_available']:.1f} s",
            ),
            ("ratio operator / plain client (both until the workloads are available)", f"{ratio:.2f}"),
            (f"operator peak RSS at {SMD_COUNT} SMDs", f"{operator['operator_peak_rss_mib']:.0f} MiB"),
            (
                f"API writes during {operator_bench.NOOP_RESYNCS} resyncs of the unchanged fleet "
                f"({resync:.0f} s period)",
                f"{operator['noop_resync_api_writes']:.0f}",
            ),
            (
                "requests per SMD per resync at rest (judging pods, policies and permissions "
                "included; watches not counted)",
                f"{operator['noop_requests_per_smd_per_resync']:.2f}",
            ),
            ("operator CPU at rest", f"{100 * operator['noop_cpu_share']:.1f} % of a core"),
            (
                "requests per SMD after one cluster-wide RBAC change (SubjectAccessReviews asked again)",
                f"{operator['rbac_change_requests_per_smd']:.1f}",
            ),
        ],
    )
    tampering = table(
        ("tampering", "reported after", "repaired after"),
        [
            (what, f"{detected:.2f} s", f"{repaired:.2f} s" if repaired is not None else "not the operator's")
            for what, detected, repaired in tamperings
        ],
    )
    issuance = table(
        ("algorithm", "total", "per certificate"),
        [
            (
                "ECDSA P-256",
                f"{certificates['ecdsa_p256_seconds']:.2f} s",
                f"{certificates['ecdsa_p256_ms_per_cert']:.2f} ms",
            ),
            (
                "RSA 3072",
                f"{certificates['rsa_3072_seconds']:.1f} s",
                f"{certificates['rsa_3072_ms_per_cert']:.1f} ms",
            ),
        ],
    )
    report = f"""# Benchmarks

Written by `make bench` on {datetime.now(UTC):%Y-%m-%d} ({platform.machine()}, {os.cpu_count()} CPUs,
Python {platform.python_version()}). One run each; the control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) shares the same CPUs, so read the numbers as a
same-machine comparison, not as absolute capacity.

## {SMD_COUNT} SecureModelDeployments on the local control plane

{fleet}

The operator's time includes what the plain client is spared: issuing a CA and {SMD_COUNT} server
certificates, reading every child back, judging seven controls per SMD, and writing status and Events.

## Tampering: from the change to the report and the repair ({SMD_COUNT} SMDs settled)

{tampering}

Each kind of tampering is done to a different SMD of the settled fleet; each look is one `kubectl get`,
so read the times to about a tenth of a second. The report (the control's Fail in status) stays until the
next resync after the repair; what the operator does not own (a binding, a stray pod) is reported and left.

## Certificate issuance, {CERT_COUNT} server certificates (key generation included)

{issuance}

RSA 3072 is {certificates["rsa_to_ecdsa_ratio"]:.0f} times slower, nearly all of it key generation;
ECDSA P-256 is the default for the CA and every leaf.

{through_sidecar}
{sidecar_cost}"""
    (ROOT / "BENCHMARKS.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

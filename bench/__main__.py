"""`make bench`: run every benchmark on a fresh local control plane and rewrite BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import bench_pki, data_path, failover_bench, operator_bench, sidecar_bench
from localcluster import running_cluster

ROOT = Path(__file__).resolve().parents[1]
SIZES = tuple(int(size) for size in os.environ.get("BENCH_SIZES", "100,1000").split(","))
CERT_COUNT = int(os.environ.get("BENCH_CERTS", "1000"))


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [header, tuple("---" for _ in header), *rows]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def fleet_at(
    size: int, temp: Path, tamperings: list[tuple[str, float, float | None]] | None
) -> dict[str, float]:
    """One size on a control plane of its own: the operator's run, then the plain client's."""
    with running_cluster() as cluster:
        operator_bench.prepare(cluster)
        print(f"operator: {size} SMDs to Ready ...", flush=True)
        numbers = operator_bench.operator_run(cluster, size, temp, tamperings)
        print(f"baseline: the same children for {size} SMDs applied by a plain client ...", flush=True)
        numbers |= operator_bench.baseline_run(cluster, size)
        if tamperings is not None:
            print("failover: the leader killed ...", flush=True)
            numbers |= failover_bench.run(cluster, temp)
    numbers["ratio"] = numbers["operator_seconds_to_ready"] / numbers["baseline_seconds_to_available"]
    return numbers


def main() -> int:
    tamperings: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="securemodels-bench-") as temp:
        fleets = {
            size: fleet_at(size, Path(temp), tamperings if size == SIZES[0] else None) for size in SIZES
        }
    print(f"pki: {CERT_COUNT} server certificates per algorithm ...", flush=True)
    certificates = bench_pki.run(CERT_COUNT)
    print("data path: through the sidecar and direct, on the real node ...", flush=True)
    through_sidecar = data_path.section(data_path.measure())
    print("sidecar: its own cost on loopback, with the rendered nginx.conf ...", flush=True)
    sidecar_cost = sidecar_bench.section(sidecar_bench.measure())
    workers, resync = operator_bench.WORKERS, operator_bench.RESYNC_SECONDS

    def row(what: str, key: str, unit: str, digits: int = 1, scale: float = 1.0) -> tuple[str, ...]:
        return (what, *(f"{scale * fleets[size][key]:.{digits}f}{unit}" for size in SIZES))

    fleet = table(
        ("measurement", *(f"{size} SMDs" for size in SIZES)),
        [
            row(
                "operator: `kubectl apply` of every SMD until all are Ready",
                "operator_seconds_to_ready",
                " s",
            ),
            row(
                f"plain client ({workers} workers): server-side apply of the same child objects",
                "baseline_seconds_to_apply",
                " s",
            ),
            row(
                "plain client: apply, then every Deployment available", "baseline_seconds_to_available", " s"
            ),
            row("ratio operator / plain client (both until the workloads are available)", "ratio", "", 2),
            row("operator peak RSS", "operator_peak_rss_mib", " MiB", 0),
            row("operator RSS at rest", "operator_rest_rss_mib", " MiB", 0),
            row(
                f"API writes during {operator_bench.NOOP_RESYNCS} resyncs of the unchanged fleet "
                f"({resync:.0f} s period)",
                "noop_resync_api_writes",
                "",
                0,
            ),
            row(
                "requests per SMD per resync at rest (watches and Lease renewals not counted)",
                "noop_requests_per_smd_per_resync",
                "",
                2,
            ),
            row(
                f"operator CPU at rest, over those {operator_bench.NOOP_RESYNCS} resyncs (one judges all)",
                "noop_cpu_share",
                " % of a core",
                1,
                100.0,
            ),
            row(
                "requests per SMD after one cluster-wide RBAC change (SubjectAccessReviews asked again)",
                "rbac_change_requests_per_smd",
                "",
                1,
            ),
        ],
    )
    first = fleets[SIZES[0]]
    failover = table(
        ("measurement", "value"),
        [
            ("Lease duration (the chart's default)", f"{first['failover_lease_seconds']:.0f} s"),
            ("SIGKILL of the leader until the standby leads", f"{first['failover_seconds_to_lead']:.1f} s"),
            (
                "SIGKILL of the leader until the standby has restored a deleted NetworkPolicy",
                f"{first['failover_seconds_to_repair']:.1f} s",
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
        ("algorithm", "certificates", "total", "per certificate"),
        [
            (
                "ECDSA P-256",
                f"{certificates['count']:.0f}",
                f"{certificates['ecdsa_p256_seconds']:.2f} s",
                f"{certificates['ecdsa_p256_ms_per_cert']:.2f} ms",
            ),
            (
                "RSA 3072",
                f"{certificates['rsa_count']:.0f}",
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

## A fleet of SecureModelDeployments in one namespace on the local control plane

{fleet}

Each size runs on a control plane of its own. The operator's time includes what the plain client is
spared: issuing a CA and a server certificate per SMD, judging every control of every SMD from its
caches, and writing status and Events. At rest it sends nothing but its Lease renewals: every read comes
from watches.

## Failover ({failover_bench.COUNT} SMDs, two operator processes)

{failover}

The standby keeps its caches warm, so once it holds the Lease its first pass repairs at once.

## Tampering: from the change to the report and the repair ({SIZES[0]} SMDs settled)

{tampering}

Each kind of tampering is done to a different SMD of the settled fleet; each look is one `kubectl get`,
so read the times to about a tenth of a second. The report (the control's Fail in status) stays until the
next resync after the repair; what the operator does not own (a binding, a stray pod) is reported and left.

## Certificate issuance, server certificates one after another (key generation included)

{issuance}

RSA 3072 is {certificates["rsa_to_ecdsa_ratio"]:.0f} times slower per certificate, nearly all of it key
generation (timed over a tenth as many);
ECDSA P-256 is the default for the CA and every leaf.

{through_sidecar}
{sidecar_cost}"""
    (ROOT / "BENCHMARKS.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

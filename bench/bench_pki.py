"""How long issuing server certificates takes, ECDSA P-256 against RSA 3072.

Each model's certificate is reissued on every rotation, so issuance cost times the number of models is
the operator's CPU bill for mTLS; key generation dominates it and is included. The CA of each run uses
the same algorithm as its leaves and is generated before the clock starts.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

from securemodels import pki

# A fixed clock: the certificates are thrown away, and the time of day must not change the work done.
NOW = datetime(2030, 1, 1, tzinfo=UTC)
DNS_NAMES = ("bench", "bench.ml-prod.svc", "bench.ml-prod.svc.cluster.local")


def _issue_seconds(algorithm: pki.KeyAlgorithm, count: int) -> float:
    ca = pki.plan_ca(None, NOW, algorithm, timedelta(days=365)).state
    started = time.perf_counter()
    for _ in range(count):
        pki.issue_server_certificate(ca, DNS_NAMES, NOW, timedelta(hours=24), algorithm)
    return time.perf_counter() - started


def run(count: int = 1000) -> dict[str, float]:
    """Seconds to issue `count` ECDSA and `count // 10` RSA server certificates (RSA key generation
    takes about a quarter of a second each), per-certificate ms, and the per-certificate ratio."""
    rsa_count = max(1, count // 10)
    ecdsa = _issue_seconds("ECDSA-P256", count)
    rsa = _issue_seconds("RSA-3072", rsa_count)
    return {
        "count": float(count),
        "rsa_count": float(rsa_count),
        "ecdsa_p256_seconds": ecdsa,
        "ecdsa_p256_ms_per_cert": ecdsa / count * 1000,
        "rsa_3072_seconds": rsa,
        "rsa_3072_ms_per_cert": rsa / rsa_count * 1000,
        "rsa_to_ecdsa_ratio": (rsa / rsa_count) / (ecdsa / count),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))

"""Where things are, for tests, the demo and the benchmarks."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "securemodels.io_securemodeldeployments.yaml"
EXAMPLES = ROOT / "examples"
CHART = ROOT / "charts" / "secure-model-operator"
OPERATOR_NAMESPACE = "securemodels-system"

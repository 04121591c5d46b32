#!/usr/bin/env bash
# The CRDs of the two report APIs the operator writes, for the tests: PolicyReport
# (wgpolicyk8s.io/v1alpha2) as Kyverno ships it, and Report (openreports.io/v1alpha1) from the OpenReports
# API. Both come from the Go modules that publish them (Apache-2.0), at pinned versions that the Go
# checksum database verifies, and are cached outside the repository keyed by those versions. Prints the
# directory holding the two files.
set -euo pipefail

kyverno=v1.19.1
openreports=v0.2.1
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}
out="$cache/report-crds/kyverno-$kyverno-openreports-$openreports"

module_dir() { # module@version: where the Go module cache holds it, downloaded if need be
  (cd "$work" && go mod download -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
}

if [ ! -f "$out/wgpolicyk8s.io_policyreports.yaml" ] || [ ! -f "$out/openreports.io_reports.yaml" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$out"
  cp "$(module_dir "github.com/kyverno/kyverno@$kyverno")/config/crds/policyreport/wgpolicyk8s.io_policyreports.yaml" \
    "$out/wgpolicyk8s.io_policyreports.yaml"
  cp "$(module_dir "github.com/openreports/reports-api@$openreports")/config/crd/openreports.io_reports.yaml" \
    "$out/openreports.io_reports.yaml"
fi
echo "$out"

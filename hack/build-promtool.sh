#!/usr/bin/env bash
# Builds promtool, the judge of the chart's alerting rules (`promtool check rules`, `promtool test rules`),
# from the Prometheus Go module at the version pinned in hack/tools/promtool/go.mod. Cached outside the
# repository in a directory keyed by that version, so it is built once. Prints the directory.
set -euo pipefail

here=$(cd "$(dirname "$0")/tools/promtool" && pwd)
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}
module=github.com/prometheus/prometheus
version=$(cd "$here" && go list -m -f '{{.Version}}' "$module")
out="$cache/promtool/prometheus-$version"

if [ ! -x "$out/promtool" ]; then
  echo "building promtool into $out (first time only, a few minutes)" >&2
  mkdir -p "$out"
  # The module's v0.3MM.P is Prometheus 3.MM.P.
  minor=${version#v0.}; minor=${minor%%.*}
  release="3.$((minor - 300)).${version##*.}"
  (cd "$here" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    -o "$out/promtool.tmp" "$module/cmd/promtool")
  mv "$out/promtool.tmp" "$out/promtool"
fi
echo "$out"

#!/usr/bin/env bash
# Grafana's published dashboard schema (@grafana/schema, the types Grafana generates from its schema) and
# the TypeScript compiler, which together check the chart's dashboard JSON. Installed with `npm ci` from
# the lock in hack/dashboard-schema, in a cache directory outside the repository keyed by that lock's
# hash. Prints the directory (its node_modules/.bin/tsc is the compiler).
set -euo pipefail

here=$(cd "$(dirname "$0")/dashboard-schema" && pwd)
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}
lock=$(sha256sum "$here/package-lock.json" | cut -c1-16)
out="$cache/dashboard-schema/$lock"

if [ ! -x "$out/node_modules/.bin/tsc" ]; then
  mkdir -p "$out"
  cp "$here/package.json" "$here/package-lock.json" "$out/"
  (cd "$out" && npm ci --silent --no-audit --no-fund --ignore-scripts >&2)
fi
echo "$out"

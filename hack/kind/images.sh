#!/usr/bin/env bash
# For `make kind-e2e`: builds the end-to-end suite's images with Docker from the same Dockerfile and
# Containerfiles as hack/images/build.sh, on the public Python base the Dockerfile pins, loads them into
# the kind cluster and prints the JSON manifest the suite reads ($SECUREMODELS_IMAGES): each image by
# the digest kind's containerd knows it by. Usage: hack/kind/images.sh CLUSTER NGINX_BINARY
set -euo pipefail
cluster=$1
nginx=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)
images="$repo/hack/images"
base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$repo/Dockerfile")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/sidecar"
cp "$nginx" "$work/sidecar/nginx"
docker build -q -t securemodels/operator:e2e "$repo" >&2
docker build -q -t securemodels/sidecar:e2e --build-arg "BASE_IMAGE=$base" -f "$images/sidecar/Containerfile" \
  "$work/sidecar" >&2
docker build -q -t securemodels/modelstub:e2e --build-arg "BASE_IMAGE=$base" -f "$images/modelstub/Containerfile" \
  "$images" >&2
docker build -q -t securemodels/client:e2e --build-arg "BASE_IMAGE=$base" -f "$images/client/Containerfile" \
  "$images" >&2

entries=()
for name in operator sidecar modelstub client; do
  kind load docker-image "securemodels/$name:e2e" --name "$cluster" >&2
  reference=$(docker exec "$cluster-control-plane" crictl inspecti -o go-template \
    --template '{{index .status.repoDigests 0}}' "docker.io/securemodels/$name:e2e")
  entries+=("\"$name\": {\"reference\": \"$reference\"}")
done
(IFS=,; echo "{${entries[*]}}")

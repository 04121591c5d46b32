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

# Signed weights, and a copy with one byte changed after signing, by a key kept in the cache.
signer="${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}/kind-weights-signer"
if [ ! -f "$signer.key" ]; then
  (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$signer.key")
fi
openssl ec -in "$signer.key" -pubout -out "$signer.pub" 2>/dev/null
mkdir -p "$work/weights"
cp "$images/weights/weights.py" "$work/weights/"
install -m 0444 "$signer.key" "$work/weights/signer.key"
for variant in weights:0 weights-tampered:1; do
  docker build -q -t "securemodels/${variant%%:*}:e2e" --build-arg "OPERATOR_IMAGE=securemodels/operator:e2e" \
    --build-arg "TAMPER=${variant##*:}" -f "$images/weights/Containerfile" "$work/weights" >&2
done

entries=()
for name in operator sidecar modelstub client weights weights-tampered; do
  kind load docker-image "securemodels/$name:e2e" --name "$cluster" >&2
  reference=$(docker exec "$cluster-control-plane" crictl inspecti -o go-template \
    --template '{{index .status.repoDigests 0}}' "docker.io/securemodels/$name:e2e")
  case $name in
    weights*) entries+=("\"$name\": {\"reference\": \"$reference\", \"public_key\": \"$signer.pub\"}") ;;
    *) entries+=("\"$name\": {\"reference\": \"$reference\"}") ;;
  esac
done
(IFS=,; echo "{${entries[*]}}")

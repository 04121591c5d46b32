#!/usr/bin/env bash
# Builds the images of the real-node tests without a daemon or a registry, with buildah (chroot
# isolation) from the local base image (build-base.sh):
#   operator   the project's Dockerfile, with the local base as PYTHON_IMAGE
#   sidecar    Debian's nginx (hack/fetch-nginx.sh) for the mTLS sidecar
#   modelstub  a model server stand-in;  client  the client pods;  coredns  cluster DNS (build-node.sh)
#   pause      the pod sandbox image, Kubernetes' pause.c compiled statically
#   weights, weights-tampered   signed model weights (model-signing, in the operator image), the second
#              with one byte changed after signing; their entries name the signer's public key
# Each image is tagged by a hash of everything it is built from, so an unchanged input is never rebuilt,
# and saved as an OCI archive. Prints the path of a JSON file naming, for each image, its reference by
# digest and its archive; the local cluster imports the archives into the node's containerd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/common.sh"

base=$("$here/build-base.sh")
nginx=$("$repo/hack/fetch-nginx.sh")
coredns="$("$repo/hack/build-node.sh")/coredns"
mkdir -p "$images/archives"
work=$(mktemp -d "$images/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# RUN steps fetch Python packages: they trust what the build host trusts (a TLS-inspecting proxy's CA,
# say). The bundle is mounted for the build only and is not part of any image.
trust=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  trust=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi

content_hash() { # files and directories whose content the image is made of
  find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum \
    | sed "s|  $repo/|  |" | sha256sum | cut -c1-16
}

build() { # name context containerfile key [build arguments...]
  local name=$1 context=$2 file=$3 key=$4
  shift 4
  local tag="localhost/securemodels/$name:$key" archive="$images/archives/$name-$key.tar"
  if [ ! -f "$archive" ] || [ ! -f "$archive.digest" ]; then
    echo "building image $name (content $key)" >&2
    buildah_cmd bud --quiet --isolation chroot --pull=never --timestamp 0 --layers=false \
      ${trust[@]+"${trust[@]}"} --build-arg "BASE_IMAGE=$base" --build-arg "PYTHON_IMAGE=$base" "$@" \
      -f "$file" -t "$tag" "$context" >"$work/$name.log" 2>&1 || { tail -30 "$work/$name.log" >&2; exit 1; }
    rm -f "$archive.tmp"
    buildah_cmd push --quiet --digestfile "$work/$name.digest" "$tag" "oci-archive:$archive.tmp:$tag" >&2
    mv "$archive.tmp" "$archive"
    mv "$work/$name.digest" "$archive.digest"
  fi
  printf '"%s": {"reference": "localhost/securemodels/%s@%s", "tag": "%s", "archive": "%s"}' \
    "$name" "$name" "$(cat "$archive.digest")" "$tag" "$archive"
}

# The operator: the Dockerfile's own context rules (.dockerignore) decide what it reads.
operator_key=$(content_hash "$repo/Dockerfile" "$repo/pyproject.toml" "$repo/README.md" \
  "$repo/requirements/dev.lock" "$repo/operator" | cut -c1-8)$(echo "$base" | sha256sum | cut -c1-8)
mkdir -p "$work/sidecar" "$work/coredns" "$work/pause"
cp "$nginx" "$work/sidecar/nginx"
cp "$coredns" "$work/coredns/coredns"
pause_source="$(cd "$repo/hack/controlplane/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
gcc -Os -static -o "$work/pause/pause" "$pause_source"
strip "$work/pause/pause"
# The weights are signed with a key made once per content and kept in the cache, so that a rebuild of
# one archive signs with the key the other was signed with.
weights_key=$(content_hash "$here/weights" | cut -c1-8)$operator_key
signer="$images/weights-signer-$weights_key"
if [ ! -f "$signer.key" ] || [ ! -f "$signer.pub" ]; then
  (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$signer.key.tmp")
  openssl ec -in "$signer.key.tmp" -pubout -out "$signer.pub" 2>/dev/null
  mv "$signer.key.tmp" "$signer.key"
fi
mkdir -p "$work/weights"
cp "$here/weights/weights.py" "$here/weights/Containerfile" "$work/weights/"
# Read by the build's unprivileged user; the copy goes with the build directory.
install -m 0444 "$signer.key" "$work/weights/signer.key"
weights() { # name tamper: the image's entry, with where its signer's public key is
  local entry
  entry=$(build "$1" "$work/weights" "$work/weights/Containerfile" "$weights_key" \
    --build-arg "OPERATOR_IMAGE=localhost/securemodels/operator:$operator_key" --build-arg "TAMPER=$2")
  printf '%s, "public_key": "%s"}' "${entry%\}}" "$signer.pub"
}
entries=(
  "$(build operator "$repo" "$repo/Dockerfile" "$operator_key")"
  "$(build sidecar "$work/sidecar" "$here/sidecar/Containerfile" \
    "$(content_hash "$nginx" "$here/sidecar" | cut -c1-8)$(echo "$base" | sha256sum | cut -c1-8)")"
  "$(build modelstub "$here" "$here/modelstub/Containerfile" \
    "$(content_hash "$here/modelstub" "$here/client" | cut -c1-8)$(echo "$base" | sha256sum | cut -c1-8)")"
  "$(build client "$here" "$here/client/Containerfile" \
    "$(content_hash "$here/client" | cut -c1-8)$(echo "$base" | sha256sum | cut -c1-8)")"
  "$(build coredns "$work/coredns" "$here/coredns/Containerfile" "$(content_hash "$coredns" "$here/coredns")")"
  "$(build pause "$work/pause" "$here/pause/Containerfile" "$(content_hash "$pause_source" "$here/pause")")"
)
# After the operator image, whose model-signing signs them.
signed=$(weights weights 0) || exit 1
tampered=$(weights weights-tampered 1) || exit 1
entries+=("$signed" "$tampered")
manifest="$images/images-$(printf '%s\n' "${entries[@]}" | sha256sum | cut -c1-16).json"
(IFS=,; echo "{${entries[*]}}") | python3 -m json.tool >"$manifest"
echo "$manifest"

#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok)
# from their Go modules. The versions live in hack/controlplane/*/go.mod; the binaries are cached outside
# the repository in a directory keyed by those versions, so a rebuild happens only when a version changes.
# Prints the directory holding the binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")/controlplane" && pwd)
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}

module_version() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
kube=$(module_version kube k8s.io/kubernetes)
etcd=$(module_version etcd go.etcd.io/etcd/server/v3)
kwok=$(module_version kwok sigs.k8s.io/kwok)
out="$cache/controlplane/kubernetes-$kube-etcd-$etcd-kwok-$kwok"

build() { # module-dir package binary [ldflags]
  [ -x "$out/$3" ] && return 0
  echo "building $3 into $out (first time only, a few minutes)" >&2
  (cd "$here/$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w ${4:-}" -o "$out/$3.tmp" "$2")
  mv "$out/$3.tmp" "$out/$3"
}

mkdir -p "$out"
minor=${kube#v1.}; minor=${minor%%.*}
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build kube k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kube_ldflags"
build kube k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$kube_ldflags"
build kube k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$kube_ldflags"
build etcd go.etcd.io/etcd/server/v3 etcd
build kwok sigs.k8s.io/kwok/cmd/kwok kwok
# kwok's own "fast" lifecycle stages: nodes become Ready, scheduled pods Running and Ready, deleted pods go.
if [ ! -f "$out/kwok-stages.yaml" ]; then
  stages=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage
  for f in "$stages"/node/fast/*.yaml "$stages"/pod/fast/pod-*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    echo "---"; cat "$f"
  done > "$out/kwok-stages.yaml.tmp"
  mv "$out/kwok-stages.yaml.tmp" "$out/kwok-stages.yaml"
fi
echo "$out"

#!/usr/bin/env bash
# Builds the real node's components from their Go modules: kubelet and kube-proxy (from the control
# plane's module, so node and control plane share one Kubernetes version), containerd 2 with ctr and its
# runc shim, the kube-router NetworkPolicy enforcer and CoreDNS. Versions live in
# hack/controlplane/kube/go.mod and hack/node/*/go.mod; each component is cached outside the repository in
# a directory keyed by its version, so a rebuild happens only when a version changes. runc and the CNI
# plugins are Debian's (make node-packages). Prints a directory holding (links to) every binary.
set -euo pipefail

root=$(cd "$(dirname "$0")" && pwd)
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}

module_version() { (cd "$root/$1" && go list -m -f '{{.Version}}' "$2"); }
kube=$(module_version controlplane/kube k8s.io/kubernetes)
containerd=$(module_version node/containerd github.com/containerd/containerd/v2)
kube_router=$(module_version node/kube-router github.com/cloudnativelabs/kube-router/v2)
coredns=$(module_version node/coredns github.com/coredns/coredns)

build() { # module-dir package output-path [ldflags] [tags]
  [ -x "$3" ] && return 0
  mkdir -p "$(dirname "$3")"
  echo "building $(basename "$3") into $(dirname "$3") (first time only, a few minutes)" >&2
  (cd "$root/$1" && CGO_ENABLED=0 go build -trimpath -tags "${5:-}" -ldflags "-s -w ${4:-}" -o "$3.tmp" "$2")
  mv "$3.tmp" "$3"
}

minor=${kube#v1.}; minor=${minor%%.*}
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
kube_out="$cache/node/kubernetes-$kube"
build controlplane/kube k8s.io/kubernetes/cmd/kubelet "$kube_out/kubelet" "$kube_ldflags"
build controlplane/kube k8s.io/kubernetes/cmd/kube-proxy "$kube_out/kube-proxy" "$kube_ldflags"

containerd_out="$cache/node/containerd-$containerd"
containerd_pkg=github.com/containerd/containerd/v2
# No btrfs, devmapper or zfs snapshotters (they need cgo and are not used): overlayfs only.
containerd_tags="no_btrfs no_devmapper no_zfs"
containerd_ldflags="-X $containerd_pkg/version.Version=$containerd -X $containerd_pkg/version.Package=$containerd_pkg"
for binary in containerd ctr containerd-shim-runc-v2; do
  build node/containerd "$containerd_pkg/cmd/$binary" "$containerd_out/$binary" "$containerd_ldflags" "$containerd_tags"
done

kube_router_out="$cache/node/kube-router-$kube_router"
build node/kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router "$kube_router_out/kube-router" \
  "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$kube_router"

coredns_out="$cache/node/coredns-$coredns"
build node/coredns github.com/coredns/coredns "$coredns_out/coredns"

# One directory naming every binary, keyed by all the versions, so callers need a single path.
out="$cache/node/bin-kubernetes-$kube-containerd-$containerd-kube-router-$kube_router-coredns-$coredns"
mkdir -p "$out"
for binary in "$kube_out"/* "$containerd_out"/* "$kube_router_out"/* "$coredns_out"/*; do
  ln -sfn "$binary" "$out/$(basename "$binary")"
done
echo "$out"

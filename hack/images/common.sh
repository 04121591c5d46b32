# Shared by the image scripts: where images are cached and how buildah is called without a daemon or a
# registry. Sourced, not run.
cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}
images="$cache/images"
# buildah keeps its own storage in the cache, not in the system's /var/lib/containers; the run root is
# per-boot state. --isolation chroot: no user namespaces or runtime daemon needed, as root.
buildah_cmd() {
  buildah --root "$images/storage" --runroot "/run/securemodels-buildah" --storage-driver overlay "$@"
}
# The first Debian mirror apt on this machine uses for the suite, so nothing names a host.
debian_mirror() {
  apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' "Release: $1" | head -n1
}

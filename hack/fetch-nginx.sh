#!/usr/bin/env bash
# Fetches Debian's nginx for the mTLS handshake tests, which run the real server with the configuration
# the operator renders. The package is downloaded with `apt-get download` and unpacked with
# `dpkg-deb -x`, not installed: nothing on the system changes and no nginx service starts. It is kept in
# a cache outside the repository keyed by the package version, so later runs only look the version up.
# Prints the path of the nginx binary.
set -euo pipefail

cache=${SECUREMODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-model-operator}

candidate() { apt-cache policy nginx 2>/dev/null | awk '$1 == "Candidate:" { print $2 }'; }

version=$(candidate)
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  # A fresh machine has no package lists yet; only root can fetch them.
  if [ "$(id -u)" -ne 0 ]; then
    echo "apt knows no nginx package: run 'apt-get update' first" >&2
    exit 1
  fi
  apt-get update -qq >&2
  version=$(candidate)
fi

out="$cache/nginx-${version//:/_}"
binary="$out/usr/sbin/nginx"
if [ ! -x "$binary" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.nginx-download.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # As root, apt would otherwise try to download as its own user, who cannot write to the work dir.
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "nginx=$version" >&2)
  dpkg-deb -x "$work"/nginx_*.deb "$work/root"
  # Unpack beside the final directory and rename, so an interrupted run never leaves half a package.
  rm -rf "$out"
  mv "$work/root" "$out"
fi
echo "$binary"

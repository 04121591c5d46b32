#!/usr/bin/env bash
# The local stand-in for python:3.11-slim-bookworm, which cannot be pulled without a registry: a Debian
# bookworm root filesystem from debootstrap with Python 3.11, pip and venv, committed as an image in
# buildah's storage. Every image of the real-node tests starts from it. Cached by the content of this
# script (the package list lives here); prints the image name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

suite=bookworm
packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
key=$(sha256sum "$0" | cut -c1-16)
name="localhost/securemodels/python-base:$key"

if ! buildah_cmd inspect --type image "$name" >/dev/null 2>&1; then
  mkdir -p "$images"
  work=$(mktemp -d "$images/.base.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "debootstrap $suite with $packages (first time only, a few minutes)" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$(debian_mirror "$suite")" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # Like the python image: pip may install into the system, no apt lists, caches or docs are kept.
  rm -f "$work"/rootfs/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/* "$work"/rootfs/usr/share/doc/* \
    "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/* "$work"/rootfs/var/log/*
  tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
  container=$(buildah_cmd from scratch)
  buildah_cmd add "$container" "$work/rootfs.tar" / >/dev/null
  buildah_cmd config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$container"
  buildah_cmd commit --quiet --rm --timestamp 0 "$container" "$name" >/dev/null
fi
echo "$name"

#!/usr/bin/env bash
# Makes the Debian 12 base image the Dockerfile starts from, where no registry is reachable:
# debootstrap's minbase variant from Debian's mirror, imported into podman's local storage.
#   tests/deploy/base_image.sh NAME:TAG WORKDIR
# Does nothing when NAME:TAG already exists.
set -euo pipefail
name=$1
work=$2
if podman image exists "$name"; then exit 0; fi
root="$work/debootstrap"
rm -rf "$root"
mkdir -p "$work"
echo "making the base image $name with debootstrap (about a minute)"
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
# apt in the image keeps no package cache and no documentation, as Debian's slim images do.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import -q - "$name" >/dev/null
rm -rf "$root"

#!/usr/bin/env bash
# Build a two-layer OCI image layout from real Debian packages, offline apart from the Debian mirror:
#   layer 1: debootstrap --variant=minbase bookworm
#   layer 2: $SOCI_IMAGE_PACKAGES (default: python3) installed with apt inside the rootfs
# Usage: build-debian-image.sh OUT_DIR   (OUT_DIR becomes an OCI image layout with tag "latest")
# The result is cached under $SOCI_CACHE (default .work/cache) keyed by this script's content and the packages.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-debian-image.sh OUT_DIR}
cache=${SOCI_CACHE:-$repo/.work/cache}
packages=${SOCI_IMAGE_PACKAGES:-python3}
key=$( (cat "$0"; echo "$packages") | sha256sum | cut -c1-12)
cached="$cache/debian-$key"

if [ ! -d "$cached" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  work=$(mktemp -d "$cache.build.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache.build.XXXXXX"; })
  trap 'rm -rf "$work"' EXIT
  echo "building Debian image (debootstrap from $mirror) ..." >&2
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:latest"
  umoci insert --image "$work/oci:latest" "$work/rootfs" /
  umoci config --image "$work/oci:latest" --config.cmd /bin/bash --os linux --architecture amd64
  rm -rf "$work/rootfs"
  umoci unpack --image "$work/oci:latest" "$work/bundle" > /dev/null
  r="$work/bundle/rootfs"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  # apt inside the chroot must trust the same CAs as the host (see docs/architecture.md, "test images").
  cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$r" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends '"$packages" \
    > "$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; exit 1; }
  rm -f "$r"/usr/local/share/ca-certificates/*.crt
  chroot "$r" sh -c 'apt-get clean; rm -rf /var/lib/apt/lists/*'
  : > "$r/etc/resolv.conf"
  umoci repack --image "$work/oci:latest" "$work/bundle"
  umoci config --image "$work/oci:latest" --config.cmd /usr/bin/python3
  umoci gc --layout "$work/oci"
  mkdir -p "$cache"
  mv "$work/oci" "$cached"
fi

rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -a "$cached" "$out"
echo "$out"

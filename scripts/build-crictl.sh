#!/bin/sh
# Build crictl (sigs.k8s.io/cri-tools) from the Go module proxy into .work/cache/bin/crictl for the CRI
# end-to-end test. Cached: nothing is rebuilt while the binary reports the wanted version. Without a Go
# toolchain it says so and exits 0 (the CRI test then skips, naming this script).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
version=v1.37.0
bin="$root/.work/cache/bin"
PATH="$PATH:/usr/local/go/bin"
export PATH

if [ -x "$bin/crictl" ] && "$bin/crictl" --version 2>/dev/null | grep -q "$version"; then
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "build-crictl: no Go toolchain (looked in PATH and /usr/local/go/bin); the CRI e2e test will skip" >&2
    exit 0
fi
mkdir -p "$bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go install -trimpath -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$version" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$version"
mv "$tmp/crictl" "$bin/crictl"
echo "build-crictl: built $bin/crictl ($version)"

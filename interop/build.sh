#!/bin/sh
# Build the interop tools from upstream SOCI's Go modules (fetched from the Go module proxy) into
# interop/.cache/bin/. Usage: interop/build.sh [soci-golden] [soci] [soci-snapshotter-grpc] [containerd2]
# (default: the first three). A tool is rebuilt only when its inputs (go.mod, go.sum, our Go sources, this
# script, the Go version) change. containerd2 = containerd, ctr and containerd-shim-runc-v2 at
# $CONTAINERD2_VERSION, built from the Go module proxy into interop/.cache/containerd2/bin/.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"
bin="$cache/bin"

PATH="$PATH:/usr/local/go/bin"
GOPATH="$cache/gopath"
GOMODCACHE="$cache/gopath/pkg/mod"
GOCACHE="$cache/gocache"
GOFLAGS=-mod=mod
CGO_ENABLED=1
export PATH GOPATH GOMODCACHE GOCACHE GOFLAGS CGO_ENABLED

command -v go >/dev/null || { echo "build.sh: Go toolchain not found (looked in PATH and /usr/local/go/bin)" >&2; exit 1; }
# upstream's zinfo C code links `-l:libz.a`; on Debian that static library comes from zlib1g-dev
libz=$(cc -print-file-name=libz.a)
[ -f "$libz" ] || { echo "build.sh: static zlib (libz.a) not found; install zlib1g-dev" >&2; exit 1; }

CONTAINERD2_VERSION=v2.2.9
targets=${*:-"soci-golden soci soci-snapshotter-grpc"}
mkdir -p "$bin"
cd "$here"

inputs_hash() {
    { go version; cat go.mod go.sum build.sh; find cmd -name '*.go' | sort | xargs cat; } | sha256sum | cut -d' ' -f1
}

upstream_version=$(go list -m -f '{{.Version}}' github.com/awslabs/soci-snapshotter)
# the cmd module has no tags on the proxy; its pseudo-version ends with the upstream commit
upstream_revision=$(go list -m -f '{{.Version}}' github.com/awslabs/soci-snapshotter/cmd | sed 's/.*-//')
ldflags="-X github.com/awslabs/soci-snapshotter/version.Version=$upstream_version"
ldflags="$ldflags -X github.com/awslabs/soci-snapshotter/version.Revision=$upstream_revision"

build_containerd2() {
    dir="$cache/containerd2/bin"
    want=$({ go version; echo "$CONTAINERD2_VERSION"; cat build.sh; } | sha256sum | cut -d" " -f1)
    if [ -x "$dir/containerd" ] && [ -f "$dir/containerd2.stamp" ] && [ "$(cat "$dir/containerd2.stamp")" = "$want" ]; then
        return
    fi
    echo "build.sh: building containerd $CONTAINERD2_VERSION (containerd, ctr, containerd-shim-runc-v2)" >&2
    mkdir -p "$dir"
    # `go install pkg@version` builds containerd's own module with its own go.mod, not ours
    module=github.com/containerd/containerd/v2
    GOFLAGS= GOBIN="$dir" go install -trimpath -ldflags "-X $module/version.Version=$CONTAINERD2_VERSION" \
        "$module/cmd/containerd@$CONTAINERD2_VERSION" "$module/cmd/ctr@$CONTAINERD2_VERSION" \
        "$module/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION"
    echo "$want" > "$dir/containerd2.stamp"
}

for t in $targets; do
    if [ "$t" = containerd2 ]; then
        build_containerd2
        continue
    fi
    case "$t" in
        soci-golden) pkg=./cmd/soci-golden ;;
        soci) pkg=github.com/awslabs/soci-snapshotter/cmd/soci ;;
        soci-snapshotter-grpc) pkg=github.com/awslabs/soci-snapshotter/cmd/soci-snapshotter-grpc ;;
        *) echo "build.sh: unknown target $t" >&2; exit 2 ;;
    esac
    want=$(inputs_hash)
    if [ -x "$bin/$t" ] && [ -f "$bin/$t.stamp" ] && [ "$(cat "$bin/$t.stamp")" = "$want" ]; then
        continue
    fi
    echo "build.sh: building $t (upstream $upstream_version, zlib $libz)" >&2
    go build -trimpath -ldflags "$ldflags" -o "$bin/$t.tmp" "$pkg"
    mv "$bin/$t.tmp" "$bin/$t"
    echo "$want" > "$bin/$t.stamp"
done

#!/usr/bin/env bash
# Build the stargz-snapshotter peer for the startup benchmark into bench/startup/.cache/bin/ (gitignored):
#   containerd-stargz-grpc: a small gRPC main of ours around the v0.18.2 library's snapshotter service
#                           (the module proxy here does not serve the upstream cmd/ module)
#   ctr-remote:             Debian's stargz-snapshotter package (apt) provides it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$here/.cache
bin=$cache/bin
mkdir -p "$bin"
export PATH=$PATH:/usr/local/go/bin
if [ ! -x "$bin/containerd-stargz-grpc" ]; then
  src=$cache/stargz-build
  rm -rf "$src" && mkdir -p "$src"
  cat > "$src/go.mod" <<'MOD'
module scratch/stargzd

go 1.24
MOD
  cat > "$src/main.go" <<'GO'
// A minimal stargz snapshotter daemon: the library's snapshotter served over containerd's snapshots gRPC API.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/stargz-snapshotter/service"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "unix socket to serve")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "state directory")
	flag.Parse()
	ctx := context.Background()
	var cfg service.Config
	cfg.NoPrometheus = true
	sn, err := service.NewStargzSnapshotterService(ctx, *root, &cfg)
	if err != nil {
		log.Fatalf("snapshotter: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Stop()
	}()
	if err := srv.Serve(l); err != nil {
		log.Printf("serve: %v", err)
	}
	if err := sn.Close(); err != nil {
		log.Printf("close: %v", err)
	}
}
GO
  (cd "$src" && go get github.com/containerd/stargz-snapshotter@v0.18.2 \
      github.com/containerd/containerd/v2@v2.2.0 github.com/containerd/containerd/api@v1.10.0 google.golang.org/grpc \
    && go mod tidy && go build -o "$bin/containerd-stargz-grpc" .)
fi
command -v ctr-remote > /dev/null || { apt-get install -y -q stargz-snapshotter > /dev/null; }
ln -sf "$(command -v ctr-remote)" "$bin/ctr-remote"
echo "$bin"

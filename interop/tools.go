//go:build tools

// Package tools pins upstream's CLI and daemon so `go build` can produce them from the module proxy.
package tools

import (
	_ "github.com/awslabs/soci-snapshotter/cmd/soci"
	_ "github.com/awslabs/soci-snapshotter/cmd/soci-snapshotter-grpc"
)

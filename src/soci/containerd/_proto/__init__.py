"""Generated protobuf modules for containerd's API; regenerate with scripts/gen-protos.sh."""

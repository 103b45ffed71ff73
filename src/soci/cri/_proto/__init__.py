"""Generated protobuf modules for CRI's runtime.v1 API; regenerate with scripts/gen-protos.sh."""

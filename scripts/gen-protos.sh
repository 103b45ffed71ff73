#!/bin/sh
# Regenerate the Python protobuf modules for containerd's gRPC API from protos/containerd/*.proto.
# Output lands in src/soci/containerd/_proto/ and is committed; never edit it by hand.
# Only *_pb2.py and *_pb2.pyi are generated: the gRPC method tables are written by hand in
# soci/containerd/api.py, so mypy sees typed code only.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
out="$root/src/soci/containerd/_proto"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$root/protos"
"$python" -m grpc_tools.protoc -I . --python_out="$tmp" --pyi_out="$tmp" containerd/*.proto

# protoc names modules after the .proto paths ("from containerd import mount_pb2");
# the modules live in soci.containerd._proto, so make the imports absolute.
sed -i 's/^from containerd import /from soci.containerd._proto import /' "$tmp"/containerd/*.py "$tmp"/containerd/*.pyi

rm -rf "$out"
mkdir -p "$out"
cp "$tmp"/containerd/* "$out/"
printf '"""Generated protobuf modules for containerd'"'"'s API; regenerate with scripts/gen-protos.sh."""\n' > "$out/__init__.py"
echo "generated $out with $("$python" -m grpc_tools.protoc --version)"

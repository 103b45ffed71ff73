#!/bin/sh
# Regenerate the Python protobuf modules: containerd's gRPC API from protos/containerd/*.proto into
# src/soci/containerd/_proto/, and CRI's runtime.v1 API from protos/cri/api.proto into src/soci/cri/_proto/.
# The output is committed; never edit it by hand.
# Only *_pb2.py and *_pb2.pyi are generated: the gRPC method tables are written by hand (soci/containerd/api.py,
# soci/cri/proxy.py), so mypy sees typed code only.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$root/protos"
"$python" -m grpc_tools.protoc -I . --python_out="$tmp" --pyi_out="$tmp" containerd/*.proto cri/api.proto

# protoc names modules after the .proto paths ("from containerd import mount_pb2");
# the modules live in soci.<package>._proto, so make the imports absolute.
sed -i 's/^from containerd import /from soci.containerd._proto import /' "$tmp"/containerd/*.py "$tmp"/containerd/*.pyi

for package in containerd cri; do
    out="$root/src/soci/$package/_proto"
    rm -rf "$out"
    mkdir -p "$out"
    cp "$tmp/$package"/* "$out/"
done
printf '"""Generated protobuf modules for containerd'"'"'s API; regenerate with scripts/gen-protos.sh."""\n' \
    > "$root/src/soci/containerd/_proto/__init__.py"
printf '"""Generated protobuf modules for CRI'"'"'s runtime.v1 API; regenerate with scripts/gen-protos.sh."""\n' \
    > "$root/src/soci/cri/_proto/__init__.py"
echo "generated with $("$python" -m grpc_tools.protoc --version)"

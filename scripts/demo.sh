#!/usr/bin/env bash
# The main job, end to end on this machine: build a real image from Debian packages (python3, numpy, scipy),
# push it to a local registry, make it SOCI-enabled with `soci convert --remote`, and start it twice through
# containerd: lazily (soci-snapshotter-grpc, FUSE) and with a normal full pull (overlayfs). Prints both times.
# Everything it starts (registry, containerd, the daemon) is stopped again by PID.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh

work=${SOCI_DEMO_DIR:-$repo/.work/demo}
rm -rf "$work/run"
mkdir -p "$work"
echo "== building the sample image from Debian packages (cached after the first run)"
SOCI_IMAGE_PACKAGES="python3 python3-numpy python3-scipy" bash scripts/build-debian-image.sh "$work/image" > /dev/null
.venv/bin/python scripts/demo.py "$work/image" "$work/run"

#!/usr/bin/env bash
# Install everything the project needs on a Debian 12 machine (as root). Idempotent: a second run does nothing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

apt_packages=(
  python3 python3-venv python3-dev gcc pkg-config libfuse3-dev fuse3 zlib1g-dev
  containerd runc docker-registry skopeo umoci debootstrap flatbuffers-compiler pigz zstd jq
  iproute2 util-linux openssl apache2-utils busybox-static
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
stamp=.venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# pip compiles an installed package's bytecode, an editable install leaves src/ without it, and
# PYTHONDONTWRITEBYTECODE (set on some machines) keeps it that way: every `soci` command would compile its
# modules again (40 ms of a `soci image rpull`, on the container start path). Fast when nothing changed.
.venv/bin/python -m compileall -q src

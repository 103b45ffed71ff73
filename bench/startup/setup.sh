#!/usr/bin/env bash
# The startup benchmark's own Python (matplotlib for the chart, pip for downloading the workloads' wheels),
# kept out of the product's .venv. Idempotent: reinstalls only when requirements.lock changes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.cache/plot-venv"
stamp="$venv/.requirements.lock"
if [[ -f "$stamp" ]] && cmp -s "$stamp" "$here/requirements.lock"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.lock"
cp "$here/requirements.lock" "$stamp"

#!/usr/bin/env bash
# The main job, end to end on this machine: build a real two-layer image from Debian packages, convert it
# into a SOCI-enabled image with `soci convert --standalone`, print the SOCI index it built, and prove the
# index works by extracting a file through its checkpoints alone.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh

work=${SOCI_DEMO_DIR:-$repo/.work/demo}
rm -rf "$work/soci-root" "$work/image-soci"
mkdir -p "$work"
soci=(.venv/bin/soci --root "$work/soci-root")

echo "== building a sample image from Debian packages (cached after the first run)"
bash scripts/build-debian-image.sh "$work/image" > /dev/null

echo "== soci convert --standalone"
start=$(date +%s%N)
"${soci[@]}" convert --standalone --format oci-dir --min-layer-size 0 "$work/image" "$work/image-soci"
end=$(date +%s%N)
echo "converted in $(( (end - start) / 1000000 )) ms"

echo "== SOCI indexes in the local store"
"${soci[@]}" index list
index_digest=$("${soci[@]}" index list -q | head -1)
echo "== soci index info $index_digest"
"${soci[@]}" index info "$index_digest"

echo "== zTOCs"
"${soci[@]}" ztoc list
ztoc_digest=$("${soci[@]}" ztoc list -q | tail -1)
echo "== extracting /usr/bin/python3.11 from its layer using only the zTOC checkpoints"
"${soci[@]}" ztoc list -q | while read -r z; do
  if "${soci[@]}" ztoc get-file --oci-layout "$work/image-soci" -o "$work/python3.11" "$z" usr/bin/python3.11 2>/dev/null; then
    echo "extracted from zTOC $z: $(sha256sum < "$work/python3.11" | cut -c1-16)… ($(stat -c %s "$work/python3.11") bytes)"
    chmod +x "$work/python3.11"
    break
  fi
done
echo "== skopeo inspect of the SOCI-enabled image"
skopeo inspect --raw "oci:$work/image-soci" | jq .
echo "done: the SOCI-enabled image is at $work/image-soci (ztoc $ztoc_digest)"

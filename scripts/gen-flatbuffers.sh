#!/bin/sh
# Regenerate the Python FlatBuffers code for the zTOC schema with Debian's flatc (flatbuffers-compiler).
# Output lands in src/soci/formats/_fbs/ztoc/ and is committed; never edit it by hand.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/src/soci/formats/_fbs"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

flatc --python -o "$tmp" "$root/schemas/ztoc.fbs"

# flatc writes imports relative to the schema namespace ("from ztoc.X import X");
# the package lives under soci.formats._fbs, so make them absolute.
sed -i 's/^\( *\)from ztoc\./\1from soci.formats._fbs.ztoc./' "$tmp"/ztoc/*.py

rm -rf "$out/ztoc"
mkdir -p "$out"
cp -r "$tmp/ztoc" "$out/ztoc"
# Shared with the other generated schemas: create it only when missing.
[ -f "$out/__init__.py" ] || printf '"""Generated FlatBuffers code (flatc --python); regenerate with scripts/gen-flatbuffers.sh."""\n' > "$out/__init__.py"
echo "generated $out/ztoc with $(flatc --version)"

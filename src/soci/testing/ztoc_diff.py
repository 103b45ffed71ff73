"""Readable explanations of why our bytes differ from upstream's (zTOCs, JSON documents)."""

from __future__ import annotations

import difflib
import hashlib
import json
import struct
from dataclasses import fields
from typing import Any

from soci.formats.ztoc import FileMetadata, Ztoc
from soci.formats.ztoc_codec import unmarshal_ztoc

MAX_REPORTED = 8  # differing entries / checkpoints listed before summarising the rest

_ZINFO_HEADER = struct.Struct("<iq")
_CHECKPOINT_HEAD = struct.Struct("<qqB")
_WINDOW = 32768


def first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first differing byte (the shorter length if one is a prefix of the other)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _gzip_checkpoints(blob: bytes) -> tuple[int, list[tuple[int, int, int, str]]] | None:
    """(span size, [(in, out, bits, window sha256)]) of a v2 gzip zinfo blob, None if it is not one."""
    if len(blob) < _ZINFO_HEADER.size:
        return None
    count, span = _ZINFO_HEADER.unpack_from(blob)
    record = _CHECKPOINT_HEAD.size + _WINDOW
    if count < 0 or len(blob) != _ZINFO_HEADER.size + count * record:
        return None
    out = []
    for i in range(count):
        base = _ZINFO_HEADER.size + i * record
        cin, cout, bits = _CHECKPOINT_HEAD.unpack_from(blob, base)
        window = blob[base + _CHECKPOINT_HEAD.size : base + record]
        out.append((cin, cout, bits, hashlib.sha256(window).hexdigest()[:12]))
    return span, out


def _describe_checkpoints(ours: bytes, theirs: bytes) -> list[str]:
    if ours == theirs:
        return []
    lines = [f"checkpoints blob differs: ours {len(ours)} bytes, upstream {len(theirs)} bytes"]
    a, b = _gzip_checkpoints(ours), _gzip_checkpoints(theirs)
    if a is None or b is None:
        lines.append(f"  first differing byte at {first_difference(ours, theirs)} (not both gzip zinfo v2)")
        return lines
    if a[0] != b[0]:
        lines.append(f"  zinfo span size: ours {a[0]}, upstream {b[0]}")
    lines.append(f"  checkpoint count: ours {len(a[1])}, upstream {len(b[1])}")
    shown = 0
    for i in range(max(len(a[1]), len(b[1]))):
        x = a[1][i] if i < len(a[1]) else None
        y = b[1][i] if i < len(b[1]) else None
        if x != y:
            if shown < MAX_REPORTED:
                fmt = "(in, out, bits, window sha256[:12])"
                lines.append(f"  checkpoint {i} {fmt}: ours {x}, upstream {y}")
            shown += 1
    if shown > MAX_REPORTED:
        lines.append(f"  ... {shown - MAX_REPORTED} more differing checkpoints")
    return lines


def _describe_entries(ours: tuple[FileMetadata, ...], theirs: tuple[FileMetadata, ...]) -> list[str]:
    lines: list[str] = []
    if len(ours) != len(theirs):
        lines.append(f"TOC entry count: ours {len(ours)}, upstream {len(theirs)}")
    shown = 0
    for i in range(max(len(ours), len(theirs))):
        x = ours[i] if i < len(ours) else None
        y = theirs[i] if i < len(theirs) else None
        if x == y:
            continue
        shown += 1
        if shown > MAX_REPORTED:
            continue
        if x is None or y is None:
            lines.append(f"entry {i}: ours {x!r}, upstream {y!r}")
            continue
        diffs = [
            f"{f.name}: ours {getattr(x, f.name)!r}, upstream {getattr(y, f.name)!r}"
            for f in fields(FileMetadata)
            if getattr(x, f.name) != getattr(y, f.name)
        ]
        lines.append(f"entry {i} ({y.name!r}): " + "; ".join(diffs))
    if shown > MAX_REPORTED:
        lines.append(f"... {shown - MAX_REPORTED} more differing entries")
    return lines


def describe_ztoc_difference(ours: bytes, theirs: bytes) -> str:
    """Field-by-field account of how two marshalled zTOCs differ, decoded with our unmarshaller."""
    head = (
        f"zTOC bytes differ: ours {len(ours)} bytes sha256:{hashlib.sha256(ours).hexdigest()}, "
        f"upstream {len(theirs)} bytes sha256:{hashlib.sha256(theirs).hexdigest()}; "
        f"first differing byte at offset {first_difference(ours, theirs)}"
    )
    decoded: list[Ztoc] = []
    for label, data in (("ours", ours), ("upstream", theirs)):
        try:
            decoded.append(unmarshal_ztoc(data))
        except Exception as exc:
            return f"{head}\n{label} does not unmarshal: {exc!r}"
    return "\n".join([head, *describe_ztoc_fields(decoded[0], decoded[1])])


def describe_ztoc_fields(ours: Ztoc, theirs: Ztoc) -> list[str]:
    lines: list[str] = []
    for f in fields(Ztoc):
        if f.name in ("entries", "checkpoints", "span_digests"):
            continue
        a, b = getattr(ours, f.name), getattr(theirs, f.name)
        if a != b:
            lines.append(f"{f.name}: ours {a!r}, upstream {b!r}")
    for i in range(max(len(ours.span_digests), len(theirs.span_digests))):
        a = ours.span_digests[i] if i < len(ours.span_digests) else None
        b = theirs.span_digests[i] if i < len(theirs.span_digests) else None
        if a != b:
            lines.append(f"span_digests[{i}]: ours {a}, upstream {b}")
    lines += _describe_checkpoints(ours.checkpoints, theirs.checkpoints)
    lines += _describe_entries(ours.entries, theirs.entries)
    if not lines:
        lines.append("every decoded field is equal: the flatbuffer encoding (builder call order) differs")
    return lines


def describe_json_difference(ours: bytes, theirs: bytes, what: str) -> str:
    """Both documents, pretty-printed, as a unified diff (plus the raw bytes when only formatting differs)."""

    def pretty(data: bytes) -> list[str]:
        try:
            obj: Any = json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace").splitlines()
        return json.dumps(obj, indent=2, sort_keys=False).splitlines()

    diff = list(difflib.unified_diff(pretty(theirs), pretty(ours), "upstream", "ours", lineterm=""))
    if not diff:
        return f"{what}: same JSON value, different bytes:\n  ours     {ours!r}\n  upstream {theirs!r}"
    return f"{what} differs:\n" + "\n".join(diff)

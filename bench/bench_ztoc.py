"""zTOC marshal/unmarshal speed on a synthetic 50,000-entry layer, and tar TOC parsing speed.

Baselines are measured in the same run: the ``flatbuffers`` package's Builder driven through the same call
sequence (marshal), the flatc-generated accessors reading every field (unmarshal), and Python's tarfile
listing the same archive (TOC). Prints entries/s, the ratio to each baseline, and to the 3 s target.

Usage: .venv/bin/python bench/bench_ztoc.py [--entries N] [--repeat R]
"""

from __future__ import annotations

import argparse
import io
import random
import tarfile
import time
from collections.abc import Callable
from typing import Any

from soci.formats._fbs.ztoc.Ztoc import Ztoc as FbZtoc
from soci.formats.tar import TocBuilder
from soci.formats.ztoc import FileMetadata, Ztoc
from soci.formats.ztoc_codec import marshal_ztoc, unmarshal_ztoc
from soci.testing.ztoc_reference import marshal_with_builder

TARGET_SEC = 3.0


def synthetic_ztoc(count: int, seed: int = 1) -> Ztoc:
    """Entries shaped like a distro layer: mostly small regular files, some dirs and links, a few xattrs."""
    rng = random.Random(seed)
    entries = []
    next_header = 0
    for i in range(count):
        kind = rng.choices(["reg", "dir", "symlink", "hardlink"], weights=[80, 12, 6, 2])[0]
        size = rng.choice([0, 120, 900, 4096, 30_000, 250_000]) if kind == "reg" else 0
        offset = next_header + 512 * rng.choice([1, 1, 1, 3])
        records = ((b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),) if rng.random() < 0.01 else ()
        entries.append(
            FileMetadata(
                name=f"usr/lib/python3/dist-packages/pkg{i % 700}/module_{i}.py".encode(),
                type=kind,
                uncompressed_offset=offset,
                uncompressed_size=size,
                linkname=b"../target/file" if kind in ("symlink", "hardlink") else b"",
                mode=rng.choice([0o644, 0o755]),
                uid=rng.choice([0, 0, 0, 1000]),
                gid=0,
                uname=b"root",
                gname=b"root",
                mod_time="2024-05-01T12:34:56Z",
                pax_records=records,
            )
        )
        end = offset + size
        next_header = end + (-end % 512)
    spans = max(1, next_header // (4 << 20))
    return Ztoc(
        compressed_archive_size=next_header // 3,
        uncompressed_archive_size=next_header + 1024,
        entries=tuple(entries),
        compression_algorithm="gzip",
        max_span_id=spans - 1,
        span_digests=tuple("sha256:" + f"{i:064x}" for i in range(spans)),
        checkpoints=bytes(12 + 32785 * spans),
    )


def generated_accessors_read(data: bytes) -> int:
    """Baseline: every FileMetadata field through the flatc-generated reader."""
    root: Any = FbZtoc.GetRootAs(data, 0)  # type: ignore[no-untyped-call]
    toc = root.Toc()
    for i in range(toc.MetadataLength()):
        fm = toc.Metadata(i)
        (
            fm.Name(),
            fm.Type(),
            fm.UncompressedOffset(),
            fm.UncompressedSize(),
            fm.Linkname(),
            fm.Mode(),
            fm.Uid(),
            fm.Gid(),
            fm.Uname(),
            fm.Gname(),
            fm.ModTime(),
            fm.Devmajor(),
            fm.Devminor(),
            [(fm.Xattrs(j).Key(), fm.Xattrs(j).Value()) for j in range(fm.XattrsLength())],
        )
    return int(toc.MetadataLength())


def synthetic_tar(count: int, seed: int = 2) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(count):
            info = tarfile.TarInfo(f"usr/share/doc/pkg{i % 500}/file_{i}.txt")
            data = b"x" * rng.choice([0, 100, 1500])
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.entries

    z = synthetic_ztoc(n)
    data = marshal_ztoc(z)
    assert data == marshal_with_builder(z), "fast marshal diverged from the runtime builder"
    assert unmarshal_ztoc(data) == z
    print(f"synthetic zTOC: {n} entries, {len(data):,} bytes (best of {args.repeat})")

    ours = best(args.repeat, lambda: marshal_ztoc(z))
    base = best(args.repeat, lambda: marshal_with_builder(z))
    print(
        f"marshal    ours {ours:6.3f} s  {n / ours:9,.0f} entries/s | flatbuffers Builder {base:6.3f} s | "
        f"speed-up x{base / ours:.2f} | {ours / TARGET_SEC:.2f} of the {TARGET_SEC:.0f} s target"
    )

    ours = best(args.repeat, lambda: unmarshal_ztoc(data))
    base = best(args.repeat, lambda: generated_accessors_read(data))
    print(
        f"unmarshal  ours {ours:6.3f} s  {n / ours:9,.0f} entries/s | generated accessors {base:6.3f} s | "
        f"speed-up x{base / ours:.2f} | {ours / TARGET_SEC:.2f} of the {TARGET_SEC:.0f} s target"
    )

    tar = synthetic_tar(n)

    def parse_toc() -> None:
        builder = TocBuilder()
        for i in range(0, len(tar), 1 << 20):
            builder.feed(tar[i : i + (1 << 20)])
        builder.finish()

    def parse_tarfile() -> None:
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.getmembers()

    ours = best(args.repeat, parse_toc)
    base = best(args.repeat, parse_tarfile)
    print(
        f"tar TOC    ours {ours:6.3f} s  {n / ours:9,.0f} entries/s | tarfile listing     {base:6.3f} s | "
        f"speed-up x{base / ours:.2f} | {len(tar) / ours / 1e6:,.0f} MB/s of tar stream"
    )


if __name__ == "__main__":
    main()

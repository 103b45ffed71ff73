"""Index build throughput and memory, against a plain zlib inflate of the same layer in the same run.

Targets (issue: foundation): build throughput >= 1.0x zlib.decompressobj (1.5x wanted); peak RSS while
indexing a 1 GB layer <= 200 MB; a multi-layer image indexes its layers in parallel.

    .venv/bin/python bench/bench_index_build.py [--layer-mb 300] [--big-mb 1024] [--cache DIR]

Each measurement runs in a fresh child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

CHUNK = 1 << 20


def make_real_layer(path: Path, target_mb: int) -> None:
    """gzip -6 of a tar of real files from this machine (libraries, docs), about target_mb compressed."""
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    roots = ["/usr/lib", "/usr/share", "/usr/bin", "/usr/include", "/usr/local/go", "/root/.pyenv"]
    budget = target_mb * (1 << 20) * 3  # about 3:1 for this mix
    with open(tmp, "wb") as raw:
        gz = subprocess.Popen(["pigz", "-6", "-c"], stdin=subprocess.PIPE, stdout=raw)
        assert gz.stdin is not None
        with tarfile.open(fileobj=gz.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for root in roots:
                for dirpath, dirnames, filenames in os.walk(root):
                    dirnames.sort()
                    for name in sorted(filenames):
                        p = os.path.join(dirpath, name)
                        try:
                            if os.path.islink(p) or not os.path.isfile(p):
                                continue
                            size = os.path.getsize(p)
                            tar.add(p, recursive=False)
                        except OSError:
                            continue
                        budget -= size
                        if budget <= 0:
                            break
                    if budget <= 0:
                        break
                if budget <= 0:
                    break
        gz.stdin.close()
        if gz.wait() != 0:
            raise SystemExit("pigz failed")
    tmp.rename(path)


def make_big_layer(path: Path, target_mb: int) -> None:
    """A large layer that compresses poorly (random data in 8 MiB files): fast to make, big on the wire."""
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw:
        gz = subprocess.Popen(["pigz", "-1", "-c"], stdin=subprocess.PIPE, stdout=raw)
        assert gz.stdin is not None
        with tarfile.open(fileobj=gz.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for i in range(target_mb // 8):
                data = os.urandom(8 << 20)
                info = tarfile.TarInfo(f"data/blob-{i:04d}.bin")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        gz.stdin.close()
        if gz.wait() != 0:
            raise SystemExit("pigz failed")
    tmp.rename(path)


def child(mode: str, path: str) -> None:
    start = time.perf_counter()
    if mode == "zlib":
        d = zlib.decompressobj(31)
        out = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                out += len(d.decompress(chunk))
                while d.eof and d.unused_data:  # concatenated members
                    rest = d.unused_data
                    d = zlib.decompressobj(31)
                    out += len(d.decompress(rest))
        result: dict[str, float] = {"uncompressed": out}
    elif mode == "build":
        from soci.formats.ztoc_codec import marshal_ztoc
        from soci.index.ztoc_builder import build_ztoc

        with open(path, "rb") as f:
            z = build_ztoc(f, span_size=1 << 22, algorithm="gzip")
        data = marshal_ztoc(z)
        result = {"uncompressed": z.uncompressed_archive_size, "entries": len(z.entries), "ztoc_bytes": len(data)}
    else:
        raise SystemExit(f"unknown mode {mode}")
    result["seconds"] = time.perf_counter() - start
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run(mode: str, path: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer-mb", type=int, default=300)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent.parent / ".work" / "bench")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    real = args.cache / f"real-{args.layer_mb}mb.tar.gz"
    big = args.cache / f"random-{args.big_mb}mb.tar.gz"
    make_real_layer(real, args.layer_mb)
    make_big_layer(big, args.big_mb)
    print(f"layer: {real.name} {real.stat().st_size / 1e6:.0f} MB compressed")
    from soci.codec.zran import available_backends

    base = run("zlib", real)
    mb = base["uncompressed"] / 1e6
    print(f"  zlib.decompressobj baseline: {base['seconds']:.2f} s, {mb / base['seconds']:.0f} MB/s uncompressed")
    for backend in available_backends():
        res = run("build", real, {"SOCI_ZLIB_BACKEND": backend})
        ratio = base["seconds"] / res["seconds"]
        print(
            f"  soci index build ({backend}): {res['seconds']:.2f} s, {mb / res['seconds']:.0f} MB/s, "
            f"{res['entries']:.0f} entries, ratio vs zlib {ratio:.2f}x (target >= 1.0x, wanted 1.5x)"
        )
    res = run("build", big)
    print(
        f"layer: {big.name} {big.stat().st_size / 1e6:.0f} MB compressed: index build peak RSS "
        f"{res['max_rss_mb']:.0f} MB (target <= 200 MB), {res['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()

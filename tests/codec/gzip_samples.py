"""Test inputs for the codec tests: tar-like payloads and gzip streams built by hand (header flags, flushes)."""

from __future__ import annotations

import io
import os
import random
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16

PIECE_KINDS = ("random", "text", "zeros", "pattern")


def make_piece(rng: random.Random, kind: str, size: int) -> bytes:
    """Incompressible, compressible, trivially compressible or short-period bytes."""
    if kind == "random":
        return rng.randbytes(size)
    if kind == "text":
        words = [b"layer", b"span", b"checkpoint", b"gzip", b"window", b"offset", b"\n", b"the", b"tar"]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words) + b" "
        return bytes(out[:size])
    if kind == "zeros":
        return bytes(size)
    period = rng.randbytes(rng.randint(1, 300))
    return (period * (size // len(period) + 1))[:size]


def make_tar(files: list[tuple[str, bytes]]) -> bytes:
    """A PAX tar of regular files with fixed metadata (deterministic bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def random_tar(seed: int, pieces: list[tuple[str, int]]) -> bytes:
    rng = random.Random(seed)
    return make_tar([(f"dir/file{i}.bin", make_piece(rng, kind, size)) for i, (kind, size) in enumerate(pieces)])


def real_files_tar(limit: int) -> bytes:
    """A tar of real text files (this interpreter's stdlib sources), cut at about ``limit`` bytes of content."""
    root = Path(os.__file__).parent
    files: list[tuple[str, bytes]] = []
    total = 0
    for path in sorted(root.glob("*.py")):
        content = path.read_bytes()
        files.append((f"usr/lib/python/{path.name}", content))
        total += len(content) + 1024
        if total >= limit:
            break
    return make_tar(files)


@dataclass(frozen=True)
class GzipMember:
    data: bytes  # the whole member: header, deflate data, trailer
    header_size: int


def gzip_member(
    payload: bytes,
    *,
    level: int = 6,
    strategy: int = zlib.Z_DEFAULT_STRATEGY,
    fname: bytes | None = None,
    fextra: bytes | None = None,
    fcomment: bytes | None = None,
    fhcrc: bool = False,
    flushes: tuple[tuple[int, int], ...] = (),
    mtime: int = 0,
) -> GzipMember:
    """One gzip member written by hand (RFC 1952), optionally flushing at (offset, Z_SYNC/FULL_FLUSH) points."""
    flags = (_FEXTRA if fextra is not None else 0) | (_FNAME if fname is not None else 0)
    flags |= (_FCOMMENT if fcomment is not None else 0) | (_FHCRC if fhcrc else 0)
    header = bytearray(b"\x1f\x8b\x08" + bytes((flags,)) + struct.pack("<I", mtime) + b"\x00\xff")
    if fextra is not None:
        header += struct.pack("<H", len(fextra)) + fextra
    if fname is not None:
        header += fname + b"\x00"
    if fcomment is not None:
        header += fcomment + b"\x00"
    if fhcrc:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
    body = bytearray()
    previous = 0
    for offset, mode in sorted(flushes):
        offset = min(max(offset, previous), len(payload))
        body += comp.compress(payload[previous:offset]) + comp.flush(mode)
        previous = offset
    body += comp.compress(payload[previous:]) + comp.flush(zlib.Z_FINISH)
    trailer = struct.pack("<II", zlib.crc32(payload), len(payload) & 0xFFFFFFFF)
    return GzipMember(bytes(header) + bytes(body) + trailer, len(header))


def split_points(rng: random.Random, total: int, count: int) -> list[int]:
    return sorted(rng.sample(range(1, total), min(count, total - 1))) if total > 1 else []


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into consecutive pieces of the given sizes (cycled), covering all of it."""
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        step = max(1, sizes[i % len(sizes)])
        out.append(data[pos : pos + step])
        pos += step
        i += 1
    return out

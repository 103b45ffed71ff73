"""A layer of large files (built with tarfile), opened in-process over a counting in-memory blob."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import random
import tarfile
from dataclasses import dataclass

from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs.layer import LayerRequest
from soci.index.ztoc_builder import build_ztoc


class CountingBlob:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    async def read_at(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        await asyncio.sleep(0)
        return self.data[offset : offset + length]

    async def refresh(self) -> None:
        return None


@dataclass(frozen=True)
class BigFilesLayer:
    blob: bytes
    names: tuple[str, ...]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()

    def request(self, span_size: int) -> tuple[LayerRequest, CountingBlob]:
        ztoc = marshal_ztoc(build_ztoc(io.BytesIO(self.blob), span_size=span_size, algorithm="gzip"))
        blob = CountingBlob(self.blob)
        ztoc_digest = "sha256:" + hashlib.sha256(ztoc).hexdigest()
        return LayerRequest(self.digest, ztoc_digest, ztoc, blob), blob


def big_files_layer(files: int = 12, size: int = 400_000, seed: int = 5) -> BigFilesLayer:
    rng = random.Random(seed)
    buf = io.BytesIO()
    names = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            name = f"models/part-{i:02d}.bin"
            info = tarfile.TarInfo(name)
            info.size = size
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(rng.randbytes(size)))
            names.append(name)
    return BigFilesLayer(gzip.compress(buf.getvalue(), mtime=0), tuple(names))

"""``RemoteBlob``: one registry blob read by ranges, the shape the lazy filesystem's BlobReader expects."""

from __future__ import annotations

from soci.errors import InvalidArgument
from soci.registry.client import RegistryClient


class RemoteBlob:
    """A blob in ``repo`` read with ranged GETs; ``size`` is learnt once and re-checked by ``refresh``."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int) -> None:
        self._client = client
        self.repo = repo
        self.digest = digest
        self._size = size

    @classmethod
    async def open(cls, client: RegistryClient, repo: str, digest: str, size: int | None = None) -> RemoteBlob:
        """A RemoteBlob; asks the registry for the size when the caller does not know it."""
        if size is None:
            size = await client.blob_size(repo, digest)
        return cls(client, repo, digest, size)

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)``, clipped at the end of the blob."""
        if offset < 0 or length < 0:
            raise InvalidArgument(f"blob {self.digest}: invalid range offset={offset} length={length}")
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        return await self._client.read_blob_range(self.repo, self.digest, offset, length)

    async def refresh(self) -> None:
        """Re-check that the blob is still there (e.g. after credentials rotated); updates its size."""
        self._size = await self._client.blob_size(self.repo, self.digest)

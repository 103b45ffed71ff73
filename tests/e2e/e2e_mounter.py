"""A LayerMounter for tests while the FUSE filesystem is elsewhere: a tmpfs filled with the whole layer.

Not lazy, but real: the snapshot's ``fs`` directory becomes a mount of its own, the layer is fetched
from the registry through the daemon's client, unpacked with overlay whiteouts, and unmounted again
when the snapshot goes. The daemon loads it with ``SOCI_SNAPSHOTTER_LAYER_MOUNTER=e2e_mounter:factory``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from soci import system
from soci.config import Config
from soci.errors import Unavailable
from soci.fs.unpack import apply_layer_file
from soci.snapshotter.remote import RemoteLayer

MARKER = ".e2e-mounter"
"""File left in the mount's parent directory naming the layer, so tests can see what was mounted."""


class UnpackingMounter:
    def __init__(self, opaque_xattr: str = "trusted.overlay.opaque") -> None:
        self.opaque_xattr = opaque_xattr

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        await asyncio.to_thread(system.mount, "soci-e2e", mountpoint, "tmpfs", "mode=755")
        try:
            fd, name = tempfile.mkstemp(prefix="e2e-layer-")
            try:
                with os.fdopen(fd, "wb") as out:
                    async for chunk in layer.client.open_blob_stream(layer.repo, layer.layer.digest, layer.layer.size):
                        out.write(chunk)
                await asyncio.to_thread(
                    apply_layer_file, Path(name), layer.layer.media_type, mountpoint, opaque_xattr=self.opaque_xattr
                )
            finally:
                os.unlink(name)
        except BaseException:
            await asyncio.to_thread(system.unmount_all, mountpoint)
            raise
        (mountpoint.parent / MARKER).write_text(layer.layer.digest)

    async def check(self, mountpoint: Path) -> None:
        if not system.is_mountpoint(mountpoint):
            raise Unavailable(f"{mountpoint} is not mounted")
        try:
            os.listdir(mountpoint)
        except OSError as exc:
            raise Unavailable(f"{mountpoint} cannot be read: {exc.strerror}") from exc

    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None:
        await asyncio.to_thread(system.unmount_all, mountpoint)
        (mountpoint.parent / MARKER).unlink(missing_ok=True)


def factory(config: Config, root: Path) -> UnpackingMounter:
    return UnpackingMounter()

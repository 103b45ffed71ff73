"""Unpack a whole layer (one without a zTOC) into a directory usable as an overlayfs lowerdir.

The blob streams through GNU tar as root (owners, modes, xattrs, devices kept) into a hidden temporary
directory; whiteouts are turned into overlayfs form (``.wh.x`` -> character device 0/0 ``x``,
``.wh..wh..opq`` -> ``trusted.overlay.opaque=y`` on its directory), and only then, once the stream's
digest has been verified, the directory is renamed into place. A directory that exists is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from soci.errors import FormatError
from soci.formats.oci import layer_compression
from soci.fs.tree import OPAQUE_WHITEOUT, WHITEOUT_PREFIX

log = logging.getLogger(__name__)

_TAR_ERROR_BYTES = 2000


async def unpack_layer(chunks: AsyncIterator[bytes], media_type: str, target: Path, *,
                       userxattr: bool = False) -> bool:  # fmt: skip
    """Extract the layer stream ``chunks`` into ``target``. False when ``target`` already existed.

    ``chunks`` must raise before its last chunk if the blob does not match its digest (as
    ``RegistryClient.open_blob_stream`` does); nothing is left behind then.
    """
    if target.is_dir():
        return False
    compression = layer_compression(media_type)
    if compression not in ("gzip", "zstd", "", "unknown"):
        raise FormatError(f"cannot unpack layer of media type {media_type!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    os.chmod(tmp, 0o755)  # the layer root, unless the tar has a "./" entry saying otherwise
    # directory times last: GNU tar otherwise creates symlinks (via placeholders) after setting them
    command = ["tar", "-x", "--delay-directory-restore", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p",
               "-f", "-", "-C", str(tmp)]  # fmt: skip
    command += {"gzip": ["-z"], "zstd": ["--zstd"]}.get(compression, [])
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None and process.stderr is not None
    try:
        errors = asyncio.ensure_future(process.stderr.read())
        try:
            async for chunk in chunks:
                process.stdin.write(chunk)
                await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # tar stopped reading: its exit status and message say why
        process.stdin.close()
        status = await process.wait()
        message = (await errors).decode(errors="replace").strip()[-_TAR_ERROR_BYTES:]
        if status != 0:
            raise FormatError(f"cannot unpack layer into {target}: tar exited with {status}: {message}")
        await asyncio.to_thread(convert_whiteouts, tmp, userxattr=userxattr)
        os.rename(tmp, target)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        raise
    log.info("unpacked layer into %s", target)
    return True


def convert_whiteouts(root: Path, *, userxattr: bool = False) -> None:
    """AUFS-style whiteouts in an unpacked layer -> overlayfs form, keeping directory times."""
    opaque = "user.overlay.opaque" if userxattr else "trusted.overlay.opaque"
    for dirpath, dirnames, filenames in os.walk(root):
        names = [n for n in filenames + dirnames if n.startswith(WHITEOUT_PREFIX.decode())]
        if not names:
            continue
        times = os.lstat(dirpath)
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            if name == OPAQUE_WHITEOUT.decode():
                os.setxattr(dirpath, opaque, b"y")
                continue
            hidden = os.path.join(dirpath, name[len(WHITEOUT_PREFIX) :])
            if os.path.lexists(hidden):
                continue  # a real entry of that name wins, as in the lazy view
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0))
            os.chown(hidden, st.st_uid, st.st_gid, follow_symlinks=False)
            with contextlib.suppress(OSError):
                os.utime(hidden, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)
        os.utime(dirpath, ns=(times.st_atime_ns, times.st_mtime_ns))
        dirnames[:] = [d for d in dirnames if not d.startswith(WHITEOUT_PREFIX.decode())]

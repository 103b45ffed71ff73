"""Leave a dead FUSE mount at a path: mount an empty pyfuse3 filesystem, then the caller SIGKILLs us.

python e2e_deadfuse.py MOUNTPOINT      # prints "mounted" once the mount is up
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio


class EmptyFS(pyfuse3.Operations):
    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attrs = pyfuse3.EntryAttributes()
        attrs.st_mode = stat.S_IFDIR | 0o755
        attrs.st_ino = inode
        return attrs

    async def statfs(self, ctx: object) -> pyfuse3.StatvfsData:
        return pyfuse3.StatvfsData()


def main() -> None:
    mountpoint = sys.argv[1]
    pyfuse3.init(EmptyFS(), mountpoint, {"fsname=soci-dead-test"})
    print("mounted", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
    os._exit(0)


if __name__ == "__main__":
    main()

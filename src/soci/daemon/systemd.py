"""systemd integration written by hand: socket activation (``LISTEN_FDS``) and ``sd_notify``."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from soci.fs.session import SESSION_NAME_PREFIX

LISTEN_FDS_START = 3


def listen_fds(environ: Mapping[str, str] | None = None) -> list[int]:
    """Sockets passed by socket activation (empty unless they are meant for this process).

    With ``FileDescriptorStoreMax=`` systemd also passes the stored ``/dev/fuse`` descriptors of the
    previous run in ``LISTEN_FDS``; they are named ``soci-fuse-...`` in ``LISTEN_FDNAMES`` and are left
    to ``soci.fs.session`` (taking one as the gRPC socket would break the start).
    """
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":")
    return [
        fd
        for offset, fd in enumerate(range(LISTEN_FDS_START, LISTEN_FDS_START + count))
        if not (offset < len(names) and names[offset].startswith(SESSION_NAME_PREFIX))
    ]


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``) to ``$NOTIFY_SOCKET``; False when there is none."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True

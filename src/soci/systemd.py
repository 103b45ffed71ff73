"""The two systemd protocols the project speaks, written by hand: descriptors passed in ``LISTEN_FDS`` (socket
activation and the file descriptor store) and ``sd_notify`` datagrams (readiness, storing descriptors).

Shared by the daemon (``soci.daemon``: its sockets, READY/STOPPING) and the lazy filesystem (``soci.fs.session``:
FUSE sessions kept in the store), so it imports nothing of ours.
"""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Mapping, Sequence

LISTEN_FDS_START = 3


def passed_fds(environ: Mapping[str, str] | None = None) -> list[tuple[int, str]]:
    """``(fd, name)`` of every descriptor systemd passed to this process (``LISTEN_FDNAMES``; "" when unnamed);
    empty unless ``LISTEN_PID`` is this process."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":")
    return [(LISTEN_FDS_START + i, names[i] if i < len(names) else "") for i in range(max(0, count))]


def notify(state: str, environ: Mapping[str, str] | None = None, fds: Sequence[int] = ()) -> bool:
    """Send ``state`` (``READY=1``, ``FDSTORE=1\\nFDNAME=x``, ...) and ``fds`` to ``$NOTIFY_SOCKET``; False when
    there is none."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sock.sendmsg([state.encode()], ancillary)
    return True

"""``python -m soci.fs.fdholder SOCKET``: keeps FUSE connections open while the daemon restarts.

A FUSE connection lives as long as some process holds its ``/dev/fuse`` file descriptor; when the last
one closes, the kernel aborts it and every file under the mount fails with ENOTCONN. Without systemd's
file descriptor store, the daemon hands its descriptor to this process, which never reads from it: the
kernel queues requests while no daemon runs, and a restarted daemon takes the descriptor back and
answers them.

Protocol: one JSON object per SOCK_SEQPACKET message on a unix socket of mode 0600 (root only, checked
again with SO_PEERCRED). ``{"op": "put", "name": N}`` with one descriptor (SCM_RIGHTS) keeps it under
``N``, replacing an older one; ``{"op": "get", "name": N}`` answers with a duplicate of it (none when
unknown); ``{"op": "drop", "name": N}`` closes it. Every answer is ``{"ok": bool, "error": str}``.

The holder exits when it holds nothing any more (after a ``drop``, or when every connection it held was
aborted, e.g. by an unmount: ``poll`` then reports an error on the descriptor), and when nothing was put
within ``IDLE_EXIT_SEC`` of its start.
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Final

IDLE_EXIT_SEC: Final = 60.0
MAX_MESSAGE: Final = 4096
_POLL_ERRORS: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL


def send_message(sock: socket.socket, message: dict[str, object], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendmsg([data])


def receive_message(sock: socket.socket) -> tuple[dict[str, object], list[int]]:
    """One message and the descriptors that came with it (the caller owns them); ({}, []) at EOF."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return {}, []
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        return {"op": "invalid"}, []
    return message, list(fds)


class Holder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.held: dict[str, int] = {}
        self._ever_held = False
        self._started = time.monotonic()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # the socket is never accessible to others, not even briefly
        try:
            path.unlink(missing_ok=True)
            self.listener.bind(str(path))
        finally:
            os.umask(old_umask)
        self.listener.listen(8)

    def done(self) -> bool:
        if self.held:
            return False
        return self._ever_held or time.monotonic() - self._started > IDLE_EXIT_SEC

    def serve(self) -> None:
        while not self.done():
            poller = select.poll()
            poller.register(self.listener, select.POLLIN)
            for fd in self.held.values():
                poller.register(fd, 0)  # errors only: reading would take requests meant for the daemon
            for fd, events in poller.poll(1000):
                if fd == self.listener.fileno():
                    self._accept()
                elif events & _POLL_ERRORS:
                    self._forget_fd(fd)
        self.listener.close()
        self.path.unlink(missing_ok=True)

    def _forget_fd(self, fd: int) -> None:
        for name, held in list(self.held.items()):
            if held == fd:
                del self.held[name]
                os.close(fd)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5.0)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid not in (0, os.getuid()):
                return
            try:
                while self._answer(conn):
                    pass
            except OSError:
                return

    def _answer(self, conn: socket.socket) -> bool:
        message, fds = receive_message(conn)
        if not message:
            return False
        op, name = message.get("op"), message.get("name")
        if not isinstance(name, str) or not name:
            for fd in fds:
                os.close(fd)
            send_message(conn, {"ok": False, "error": "a name is needed"})
            return True
        if op == "put" and len(fds) == 1:
            old = self.held.pop(name, None)
            if old is not None:
                os.close(old)
            self.held[name] = fds[0]
            self._ever_held = True
            send_message(conn, {"ok": True})
        elif op == "get" and not fds:
            kept = self.held.get(name)
            send_message(conn, {"ok": kept is not None}, [kept] if kept is not None else None)
        elif op == "drop" and not fds:
            old = self.held.pop(name, None)
            if old is not None:
                os.close(old)
            send_message(conn, {"ok": True})
        else:
            for fd in fds:
                os.close(fd)
            send_message(conn, {"ok": False, "error": f"bad request {op!r}"})
        return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m soci.fs.fdholder SOCKET", file=sys.stderr)
        return 2
    Holder(Path(argv[1])).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

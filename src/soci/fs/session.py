"""FUSE sessions that outlive the process serving them.

The kernel keeps a FUSE connection while any process holds its ``/dev/fuse`` descriptor. ``LazyMount``
mounts with a descriptor it opened itself and gives a duplicate to a keeper: systemd's file descriptor
store (``sd_notify`` ``FDSTORE=1`` with ``FDNAME``, when ``$NOTIFY_SOCKET`` is set and the unit has
``FileDescriptorStoreMax=``, which systemd announces as ``$FDSTORE``), or else ``soci.fs.fdholder``, a
process of our own reached by a unix socket of mode 0600. A restarted process takes the descriptor back
and serves the same connection: running containers keep their open files, and their requests wait in
the kernel's queue meanwhile.

Next to the mount point, ``.<name>.session.json`` records what adopting needs: the mount's device
number (to check that the mount there is still that connection) and the kernel's INIT request. libfuse
only serves a session that starts with INIT, and the kernel sends it once per connection; the adopting
process replays the recorded one to libfuse (see ``LazyMount``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from soci import system, systemd
from soci.errors import Unavailable
from soci.fs import fdholder
from soci.store.content import atomic_write

log = logging.getLogger(__name__)

FUSE_NOTIFY_RESEND: Final = 7
"""Kernel >= 6.9: queue every request the previous server read but never answered again."""
ADOPTED_INIT_UNIQUE: Final = 1 << 62
"""Request id of the replayed INIT: the kernel knows no such request and drops libfuse's reply (ENOENT)."""
HOLDER_DIR: Final = Path("/run/soci-snapshotter-grpc")
HOLDER_START_TIMEOUT_SEC: Final = 10.0
_IN_HEADER: Final = struct.Struct("<IIQQIIII")  # fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, pad
_OUT_HEADER: Final = struct.Struct("<IiQ")  # fuse_out_header: len, error, unique


@dataclass(frozen=True, slots=True)
class SessionRecord:
    device: str
    """``major:minor`` of the mount (from mountinfo)."""
    init: bytes
    """The kernel's INIT request, as read from ``/dev/fuse``."""


def record_path(mountpoint: Path) -> Path:
    return mountpoint.parent / f".{mountpoint.name}.session.json"


def write_record(mountpoint: Path, record: SessionRecord) -> None:
    data = json.dumps({"device": record.device, "init": base64.b64encode(record.init).decode()}).encode()
    atomic_write(record_path(mountpoint), data, mode=0o600)


def read_record(mountpoint: Path) -> SessionRecord | None:
    try:
        raw = json.loads(record_path(mountpoint).read_bytes())
        return SessionRecord(str(raw["device"]), base64.b64decode(raw["init"], validate=True))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_record(mountpoint: Path) -> None:
    record_path(mountpoint).unlink(missing_ok=True)


def adopted_init(init: bytes) -> bytes:
    """The recorded INIT request with a request id the kernel does not know (its reply must not land)."""
    if len(init) < _IN_HEADER.size:
        raise Unavailable("the recorded FUSE INIT request is truncated")
    fields = list(_IN_HEADER.unpack_from(init))
    fields[2] = ADOPTED_INIT_UNIQUE
    return _IN_HEADER.pack(*fields) + init[_IN_HEADER.size :]


def notify_resend(fd: int) -> bool:
    """Ask the kernel to queue again the requests a dead server read but never answered."""
    try:
        os.write(fd, _OUT_HEADER.pack(_OUT_HEADER.size, FUSE_NOTIFY_RESEND, 0))
    except OSError as exc:
        # kernels before 6.9 do not know it: those requests then wait until the mount goes away
        log.warning("the kernel refused FUSE_NOTIFY_RESEND (%s): requests in flight at the crash stay unanswered",
                    exc.strerror)  # fmt: skip
        return False
    return True


def connection_alive(fd: int) -> bool:
    """False once the kernel aborted the connection (unmounted, or aborted through fusectl)."""
    poller = select.poll()
    poller.register(fd, 0)
    return not any(events & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, events in poller.poll(0))


def mount_fuse(mountpoint: Path, fsname: str, options: str) -> int:
    """Open ``/dev/fuse`` and mount it read-only at ``mountpoint``; returns the descriptor."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    data = f"fd={fd},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()},{options}"
    try:
        system.mount(fsname, mountpoint, "fuse", data, system.MS_RDONLY)
    except OSError as exc:
        os.close(fd)
        raise Unavailable(f"cannot mount FUSE at {mountpoint}: {os.strerror(exc.errno or 0)}") from None
    return fd


class FdKeeper(Protocol):
    """Holds descriptors across restarts of this process, by name."""

    def put(self, name: str, fd: int) -> None: ...
    def take(self, name: str) -> int | None: ...
    def drop(self, name: str) -> None: ...


class SystemdStore:
    """systemd's file descriptor store: kept descriptors come back in ``LISTEN_FDS`` / ``LISTEN_FDNAMES``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    def _notify(self, state: str, fds: list[int] | None = None) -> None:
        if not systemd.notify(state, self._env, fds or ()):
            raise Unavailable("systemd's file descriptor store needs $NOTIFY_SOCKET")

    def put(self, name: str, fd: int) -> None:
        self._notify(f"FDSTORE=1\nFDNAME={name}", [fd])

    def take(self, name: str) -> int | None:
        return next((fd for fd, fd_name in systemd.passed_fds(self._env) if fd_name == name), None)

    def drop(self, name: str) -> None:
        self._notify(f"FDSTOREREMOVE=1\nFDNAME={name}")


class HolderStore:
    """``soci.fs.fdholder`` at ``path``, started on the first ``put`` when it is not running."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _request(self, message: dict[str, object], fds: list[int] | None = None) -> tuple[bool, list[int]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.path))
            fdholder.send_message(sock, message, fds)
            answer, received = fdholder.receive_message(sock)
        return answer.get("ok") is True, received

    def pid(self) -> int | None:
        """The holder's process id (SO_PEERCRED), None when it does not run."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
                sock.connect(str(self.path))
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        return int(struct.unpack("3i", creds)[0])

    def _running(self) -> bool:
        return self.pid() is not None

    def _spawn(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.Popen(
            [sys.executable, "-m", "soci.fs.fdholder", str(self.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the daemon's process group: a signal to the group spares it
            close_fds=True,
        )  # fmt: skip
        deadline = time.monotonic() + HOLDER_START_TIMEOUT_SEC
        while not self._running():
            if time.monotonic() > deadline:
                raise Unavailable(f"the FUSE descriptor holder did not start at {self.path}")
            time.sleep(0.02)

    def put(self, name: str, fd: int) -> None:
        if not self._running():
            self._spawn()
        ok, _ = self._request({"op": "put", "name": name}, [fd])
        if not ok:
            raise Unavailable(f"the FUSE descriptor holder at {self.path} refused {name}")

    def take(self, name: str) -> int | None:
        try:
            ok, fds = self._request({"op": "get", "name": name})
        except OSError:
            return None
        if not ok or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return None
        return fds[0]

    def drop(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self._request({"op": "drop", "name": name})


def default_keeper(mountpoint: Path, environ: Mapping[str, str] | None = None) -> FdKeeper:
    env = os.environ if environ is None else environ
    if env.get("NOTIFY_SOCKET") and env.get("FDSTORE", "0") not in ("", "0"):
        return SystemdStore(env)
    return HolderStore(HOLDER_DIR / f"fdholder-{_mount_key(mountpoint)}.sock")


# systemd hands stored descriptors back in LISTEN_FDS next to the activation socket; the daemon tells
# them apart by this prefix of their LISTEN_FDNAMES name
SESSION_NAME_PREFIX: Final = "soci-fuse-"


def session_name(mountpoint: Path) -> str:
    """The descriptor's name in the keeper (systemd allows 255 printable characters, no colon)."""
    return f"{SESSION_NAME_PREFIX}{_mount_key(mountpoint)}"


def _mount_key(mountpoint: Path) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(mountpoint))).hexdigest()[:16]

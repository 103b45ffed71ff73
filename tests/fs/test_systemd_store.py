"""SystemdStore speaks systemd's fd store protocol (sd_notify FDSTORE=1/FDNAME with SCM_RIGHTS, the
descriptors coming back in LISTEN_FDS/LISTEN_FDNAMES). A real systemd is not available here, so the
notify socket is a datagram socket of the test's own, as systemd's is."""

from __future__ import annotations

import array
import os
import socket
from pathlib import Path

from soci.fs.session import SystemdStore, default_keeper, session_name


def _receive(sock: socket.socket) -> tuple[str, list[int]]:
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return message.decode(), list(fds)


def test_put_and_drop_send_fdstore_messages_with_the_descriptor(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    kept = tmp_path / "kept"
    kept.write_bytes(b"x")
    name = session_name(tmp_path / "mnt")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify))
        store = SystemdStore({"NOTIFY_SOCKET": str(notify), "FDSTORE": "16"})
        fd = os.open(kept, os.O_RDONLY)
        try:
            store.put(name, fd)
        finally:
            os.close(fd)  # the store holds its own copy, as systemd does
        message, fds = _receive(receiver)
        assert message == f"FDSTORE=1\nFDNAME={name}"
        assert len(fds) == 1
        assert os.fstat(fds[0]).st_ino == kept.stat().st_ino
        os.close(fds[0])
        store.drop(name)
        message, fds = _receive(receiver)
        assert (message, fds) == (f"FDSTOREREMOVE=1\nFDNAME={name}", [])


def test_take_finds_the_descriptor_by_name_only_for_this_process(tmp_path: Path) -> None:
    name = session_name(tmp_path / "mnt")
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": f"soci-snapshotter.socket:{name}"}
    assert SystemdStore(env).take(name) == 4
    assert SystemdStore(env).take(session_name(tmp_path / "other")) is None
    assert SystemdStore({**env, "LISTEN_PID": "1"}).take(name) is None


def test_default_keeper_uses_systemd_only_with_fdstore_announced(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    assert isinstance(default_keeper(mnt, {"NOTIFY_SOCKET": "/run/x", "FDSTORE": "16"}), SystemdStore)
    assert not isinstance(default_keeper(mnt, {"NOTIFY_SOCKET": "/run/x"}), SystemdStore)
    assert not isinstance(default_keeper(mnt, {"NOTIFY_SOCKET": "/run/x", "FDSTORE": "0"}), SystemdStore)

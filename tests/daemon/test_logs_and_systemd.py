"""JSON logs in logrus's shape; sd_notify and LISTEN_FDS parsing."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
from pathlib import Path

import pytest

from soci.daemon import logs, systemd


def test_json_log_lines_carry_extra_fields() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup(logging.DEBUG, stream)
    try:
        logging.getLogger("soci.test").info(
            "remote snapshot successfully prepared", extra={"remote-snapshot-prepared": "true", "key": "k"}
        )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["level"] == "info" and entry["msg"] == "remote snapshot successfully prepared"
    assert entry["remote-snapshot-prepared"] == "true" and entry["key"] == "k"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)", entry["time"])
    assert list(entry) == sorted(entry)


@pytest.mark.parametrize(("name", "level"), [("trace", logs.TRACE), ("warn", logging.WARNING), ("panic", 50)])
def test_upstream_level_names(name: str, level: int) -> None:
    assert logs.parse_level(name) == level


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="chatty"):
        logs.parse_level("chatty")


def test_listen_fds_only_for_this_process() -> None:
    assert systemd.listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}) == [3, 4]
    assert systemd.listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "2"}) == []
    assert systemd.listen_fds({}) == []


def test_listen_fds_leaves_out_stored_fuse_sessions() -> None:
    # systemd puts the fd store's descriptors after the sockets, named as they were stored
    env = {
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDS": "3",
        "LISTEN_FDNAMES": "soci-fuse-0123456789abcdef:soci-snapshotter.socket:soci-fuse-fedcba9876543210",
    }
    assert systemd.listen_fds(env) == [4]


def test_notify_sends_one_datagram(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert receiver.recv(16) == b"READY=1"
    assert not systemd.notify("READY=1", {})

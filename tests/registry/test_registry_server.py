"""The docker-registry test kit itself: start, stop by PID, clean up."""

from __future__ import annotations

import os
import socket

import pytest

from soci.testing.registry_server import RegistryServer, bcrypt_hash

pytestmark = pytest.mark.registry


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_and_stop_by_pid() -> None:
    server = RegistryServer().start()
    pid, port, workdir = server.pid, server.port, server.workdir
    assert workdir is not None and workdir.is_dir()
    status, _, body = server.http_request("GET", "/v2/")
    assert (status, body) == (200, b"{}")
    server.stop()
    assert not pid_alive(pid)
    assert not workdir.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_auth_modes_refuse_anonymous_requests() -> None:
    with RegistryServer(tls=True, auth="htpasswd") as basic:
        status, headers, _ = basic.http_request("GET", "/v2/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert basic.push_blob("kit/basic", b"ok").startswith("sha256:")
    with RegistryServer(auth="token") as token:
        status, headers, _ = token.http_request("GET", "/v2/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer realm=")
        digest, _ = token.push_image("kit/token", "v1", [b"layer"])
        assert digest.startswith("sha256:")


def test_bcrypt_hash_is_bcrypt() -> None:
    assert bcrypt_hash("pw").startswith("$2")

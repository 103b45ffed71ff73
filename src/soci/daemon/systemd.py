"""The daemon's side of systemd: the sockets socket activation passed, and readiness notifications."""

from __future__ import annotations

from collections.abc import Mapping

from soci.fs.session import SESSION_NAME_PREFIX
from soci.systemd import notify, passed_fds

__all__ = ["listen_fds", "notify"]


def listen_fds(environ: Mapping[str, str] | None = None) -> list[int]:
    """Sockets passed by socket activation (empty unless they are meant for this process).

    With ``FileDescriptorStoreMax=`` systemd also passes the stored ``/dev/fuse`` descriptors of the
    previous run in ``LISTEN_FDS``; they are named ``soci-fuse-...`` in ``LISTEN_FDNAMES`` and are left
    to ``soci.fs.session`` (taking one as the gRPC socket would break the start).
    """
    return [fd for fd, name in passed_fds(environ) if not name.startswith(SESSION_NAME_PREFIX)]

"""Run ``soci-snapshotter-grpc`` as a child process for tests and benchmarks, stopped by its PID.

daemon = SnapshotterProcess(workdir).start()
... containerd with proxy_plugins={"soci": daemon.socket} ...
daemon.stop(signal.SIGINT)        # SIGINT: unmount and clean up; SIGTERM: leave mounts
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

_START_TIMEOUT_SEC: Final = 30.0
_STOP_TIMEOUT_SEC: Final = 30.0
READY_MESSAGE: Final = "soci-snapshotter-grpc successfully started"


class SnapshotterProcess:
    """The daemon with root ``workdir/root`` and socket ``workdir/soci.sock``.

    Args:
        config: TOML text for ``--config`` (none: the daemon's defaults).
        env: extra environment (e.g. ``SOCI_SNAPSHOTTER_LAYER_MOUNTER``, ``PYTHONPATH``).
        program: the command that starts the daemon (default: this interpreter's ``-m soci.daemon``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        log_level: str = "debug",
        extra_args: tuple[str, ...] = (),
        program: tuple[str, ...] = (sys.executable, "-m", "soci.daemon"),
    ) -> None:
        self.workdir = workdir
        self.program = program
        self.config = config
        self.env = dict(env or {})
        self.log_level = log_level
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        # unix socket paths are limited to ~104 bytes, and test directories are long
        self.socket_dir = Path(tempfile.mkdtemp(prefix="soci-"))
        # not at stop(): a restarted daemon listens at the same path, which containerd's config names
        weakref.finalize(self, shutil.rmtree, self.socket_dir, ignore_errors=True)

    @property
    def socket(self) -> Path:
        return self.socket_dir / "soci.sock"

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    @property
    def pid(self) -> int:
        assert self._process is not None, "daemon not started"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        args = [*self.program, "--address", str(self.socket), "--root", str(self.root)]
        args += ["--log-level", self.log_level]
        if self.config is not None:
            config_path = self.workdir / "config.toml"
            config_path.write_text(self.config)
            args += ["--config", str(config_path)]
        return args + list(self.extra_args)

    def start(self) -> SnapshotterProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        environment = {**os.environ, **self.env}
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                self.command(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment
            )
        deadline = time.monotonic() + _START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"soci-snapshotter-grpc exited with {self._process.returncode}: {self.log_tail()}")
            if any(entry.get("msg") == READY_MESSAGE for entry in self.log_entries(since_start=True)):
                return self
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"soci-snapshotter-grpc did not start in {_START_TIMEOUT_SEC:g}s: {self.log_tail()}")

    def stop(self, signum: int = signal.SIGTERM, timeout_sec: float = _STOP_TIMEOUT_SEC) -> int | None:
        """Send ``signum`` and wait for the exit; returns the exit status (None if it was not running)."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout_sec)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log_entries(self, *, since_start: bool = False) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (non-JSON lines are skipped)."""
        if not self.log_path.exists():
            return []
        with self.log_path.open("rb") as log_file:
            if since_start:
                log_file.seek(self._log_offset)
            lines = log_file.read().decode(errors="replace").splitlines()
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def accepts_connections(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def __enter__(self) -> SnapshotterProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

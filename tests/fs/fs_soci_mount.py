"""``soci mount`` as a child process, its stderr collected by a thread (shared by the CLI and hostile-input tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

SOCI = [sys.executable, "-c", "from soci.cli.main import cli; cli(prog_name='soci')"]


class SociMount:
    """``soci mount --plain-http ARGS...``; ``ready`` is set at its ``mounted`` line or when it exits."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen([*SOCI, "mount", "--plain-http", *args], stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("mounted "):
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout: float = 120) -> None:
        """Assert it mounted and is still serving."""
        self.ready.wait(timeout)
        assert self.process.poll() is None, "".join(self.lines)
        assert any(line.startswith("mounted ") for line in self.lines), "".join(self.lines)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` (if still running) and wait: a hang fails here."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        status = self.process.wait(60)
        self._reader.join(10)
        return status

    def output(self) -> str:
        return "".join(self.lines)

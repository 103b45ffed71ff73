"""A private containerd for tests and benchmarks: own root, state and socket, stopped by its PID.

    with ContainerdServer(workdir, proxy_plugins={"soci": daemon_socket}) as ctrd:
        ctrd.ctr("images", "ls")

Leftover runc shims of this instance are found by their ``-address`` argument and stopped by PID;
mounts left under the work directory are detached on stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

_START_TIMEOUT_SEC: Final = 20.0
_STOP_TIMEOUT_SEC: Final = 15.0


def containerd_available() -> bool:
    return all(shutil.which(tool) for tool in ("containerd", "ctr", "runc"))


def _pids_with_argument(argument: str) -> list[int]:
    """PIDs of processes whose command line contains ``argument`` as one word."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in words:
            found.append(int(entry.name))
    return found


def wait_for_exit(pid: int, timeout_sec: float) -> bool:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def cri_plugin_config(*, sandbox_image: str, cni_dir: Path, hosts_dir: Path, snapshotter: str = "soci") -> str:
    """``cri_config`` for ``ContainerdServer``: the CRI plugin preparing images with ``snapshotter`` (with CRI's
    snapshot labels, as a Kubernetes node's containerd), registries from ``hosts_dir``, CNI config in ``cni_dir``."""
    return f"""[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # the sandbox asks for oom_score_adj -998, which this machine does not let even root set (EACCES)
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    disable_snapshot_annotations = false
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts_dir}"
"""


class ContainerdServer:
    """containerd with its files under ``workdir``; ``proxy_plugins`` maps snapshotter names to sockets."""

    def __init__(
        self,
        workdir: Path,
        *,
        proxy_plugins: Mapping[str, Path] | None = None,
        log_level: str = "info",
        binary: str = "containerd",
        bin_dir: Path | None = None,
        cri_config: str | None = None,
    ) -> None:
        """``bin_dir``: take containerd, ctr and the runc shim from there (another containerd build).

        ``cri_config``: TOML for ``[plugins."io.containerd.grpc.v1.cri"]`` (and its subtables), which turns the
        CRI plugin on; without it the plugin is disabled (no CNI or stream server needed).
        """
        self.workdir = workdir
        self.cri_config = cri_config
        self.proxy_plugins = dict(proxy_plugins or {})
        self.log_level = log_level
        self.bin_dir = bin_dir
        self.binary = str(bin_dir / "containerd") if bin_dir is not None else binary
        self._process: subprocess.Popen[bytes] | None = None
        # unix socket paths are limited to ~104 bytes, and test directories are long
        self.socket_dir = Path(tempfile.mkdtemp(prefix="ctrd-"))

    @property
    def address(self) -> str:
        return str(self.socket_dir / "containerd.sock")

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def log_path(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def pid(self) -> int:
        assert self._process is not None, "containerd not started"
        return self._process.pid

    def config_text(self) -> str:
        disabled = "[]" if self.cri_config is not None else '["io.containerd.grpc.v1.cri"]'
        lines = [
            "version = 2",
            f'root = "{self.root}"',
            f'state = "{self.workdir / "state"}"',
            f"disabled_plugins = {disabled}",
            "",
            "[grpc]",
            f'  address = "{self.address}"',
            "[ttrpc]",
            f'  address = "{self.address}.ttrpc"',
            "[debug]",
            f'  address = "{self.socket_dir / "debug.sock"}"',
            f'  level = "{self.log_level}"',
            "",
            "[proxy_plugins]",
        ]
        for name, socket_path in self.proxy_plugins.items():
            lines += [f"  [proxy_plugins.{name}]", '    type = "snapshot"', f'    address = "{socket_path}"']
        if self.cri_config is not None:
            lines += ["", self.cri_config]
        return "\n".join(lines) + "\n"

    def start(self) -> ContainerdServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "containerd.toml"
        config.write_text(self.config_text())
        env = None
        if self.bin_dir is not None:  # containerd finds that build's runc shim first
            env = {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [self.binary, "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + _START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"containerd exited at start; see {self.log_path}")
            if Path(self.address).is_socket() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"containerd did not start in {_START_TIMEOUT_SEC:g}s; see {self.log_path}")

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 300.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr -a <socket> ARGS``; with ``check``, a failure raises with ctr's stderr in the message."""
        ctr = str(self.bin_dir / "ctr") if self.bin_dir is not None else "ctr"
        result = subprocess.run(
            [ctr, "-a", self.address, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def shim_pids(self) -> list[int]:
        return _pids_with_argument(self.address)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in self.shim_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            wait_for_exit(pid, 5.0)
        _detach_mounts_under(self.workdir)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> ContainerdServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _detach_mounts_under(path: Path) -> None:
    points: Sequence[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        points = [line.split(" ")[4] for line in table]
    prefix = str(path).rstrip("/") + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)

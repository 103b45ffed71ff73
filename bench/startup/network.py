"""Registry network shaping: a delaying TCP proxy in front of the registry, and tc htb on its port.

The kernel here has no netem, so latency comes from the proxy: every chunk a client sends (in practice one
HTTP request) waits ``delay_ms`` before it is forwarded. Bandwidth comes from an htb class that matches the
proxy's source port on lo, so containerd's and the snapshotters' unix sockets stay fast.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DelayProxy:
    """``127.0.0.1:port`` forwarding to ``upstream`` (host, port), in a thread with its own event loop."""

    def __init__(self, upstream: tuple[str, int], delay_ms: float) -> None:
        self.upstream = upstream
        self.delay = delay_ms / 1000.0
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await reader.read(1 << 16):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w, self.delay), self._pipe(up_r, client_w, 0.0))

    def start(self) -> DelayProxy:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", self.port, limit=1 << 20)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class HtbShaper:
    """htb on lo: traffic whose source port is ``port`` gets ``mbit``; everything else is left fast."""

    def __init__(self, port: int, mbit: float, dev: str = "lo") -> None:
        self.port, self.mbit, self.dev = port, mbit, dev
        self.installed = False

    def _tc(self, *args: str, check: bool = True) -> None:
        result = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"tc {' '.join(args)}: {result.stderr.strip()}")

    def _qdiscs(self) -> str:
        return subprocess.run(["tc", "qdisc", "show", "dev", self.dev], capture_output=True, text=True).stdout

    def start(self, wait_sec: float = 900) -> HtbShaper:
        """Install the qdisc; another benchmark's qdisc on the device is waited out, never replaced."""
        deadline = time.monotonic() + wait_sec
        while "htb" in (existing := self._qdiscs()) or "tbf" in existing:
            if time.monotonic() > deadline:
                raise RuntimeError(f"a qdisc is already on {self.dev}: {existing.strip()} (not ours; not replaced)")
            print(f"network: waiting for another qdisc on {self.dev} to go: {existing.strip()}", flush=True)
            time.sleep(10)
        self._tc("qdisc", "add", "dev", self.dev, "root", "handle", "1:", "htb", "default", "99")
        self.installed = True
        self._tc("class", "add", "dev", self.dev, "parent", "1:", "classid", "1:99", "htb", "rate", "40gbit")
        rate = f"{self.mbit}mbit"
        self._tc(
            "class",
            "add",
            "dev",
            self.dev,
            "parent",
            "1:",
            "classid",
            "1:10",
            "htb",
            "rate",
            rate,
            "ceil",
            rate,
            "burst",
            "64k",
        )
        self._tc(
            "filter",
            "add",
            "dev",
            self.dev,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            "1",
            "u32",
            "match",
            "ip",
            "sport",
            str(self.port),
            "0xffff",
            "flowid",
            "1:10",
        )
        return self

    def ensure(self) -> bool:
        """Reinstall the class and filter if someone removed the qdisc; True if it had to."""
        if not self.installed or f"{self.mbit:g}Mbit" in self._classes():
            return False
        print(f"network: the shaping on {self.dev} was removed by someone else; reinstalling", flush=True)
        self.installed = False
        self.start()
        return True

    def _classes(self) -> str:
        return subprocess.run(["tc", "class", "show", "dev", self.dev], capture_output=True, text=True).stdout

    def stop(self) -> None:
        if self.installed:
            self._tc("qdisc", "del", "dev", self.dev, "root", check=False)
            self.installed = False


@dataclass
class Measured:
    bandwidth_mbit: float
    latency_ms: float
    """Extra time of a small request through the proxy over the same request sent straight to the registry."""


def _timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[float, int]:
    request = urllib.request.Request(url, headers=headers or {})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        size = len(response.read())
    return time.perf_counter() - start, size


def measure(direct: str, shaped: str, blob_path: str, sample_bytes: int = 8 << 20) -> Measured:
    """Bandwidth from a ranged blob GET through the shaped path; latency as the median extra of 9 small GETs."""
    extras = []
    for _ in range(9):
        shaped_t, _ = _timed_get(f"http://{shaped}/v2/")
        direct_t, _ = _timed_get(f"http://{direct}/v2/")
        extras.append(shaped_t - direct_t)
    extras.sort()
    elapsed, size = _timed_get(f"http://{shaped}{blob_path}", {"Range": f"bytes=0-{sample_bytes - 1}"})
    return Measured(bandwidth_mbit=size * 8 / elapsed / 1e6, latency_ms=extras[len(extras) // 2] * 1000)

"""A bounded load soak on loopback, shared by ``bench/soak.py`` and ``tests/e2e/test_soak.py``.

Containers from several SOCI images run at once through containerd (``ctr run -d``, the real FUSE
mounter); each reads its image's lazily loaded files with ``sha256sum`` in rounds. After the first round
the daemon is killed with SIGKILL; the second round starts while no daemon runs (its reads wait in the
kernel's FUSE queue) and the daemon is started again with the same flags. The daemon's VmRSS and open
descriptor count are sampled throughout.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from e2e_images import BuiltImage, convert, push_image
from e2e_stack import FUSE_MOUNTER, Stack, stack_running, wait_until

from soci.testing.registry_server import RegistryServer

BUSYBOX = Path("/usr/bin/busybox")
ROUNDS = 3
FILES_PER_ROUND = 4


@dataclass
class Samples:
    rss_kib: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


@dataclass
class SoakResult:
    containers: int
    images: int
    reads: int
    failures: list[str]
    fds_before: int
    rss_before_kib: int
    fds_after: int
    peak_rss_kib: int
    peak_fds: int
    daemons_sampled: int
    restart_gap_ms: float
    wall_sec: float


def process_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no VmRSS line")


def process_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _layer_files(image: BuiltImage) -> dict[str, str]:
    """Path in the container -> sha256 of the big layer's files (read lazily through FUSE)."""
    with tarfile.open(fileobj=io.BytesIO(image.layers[1].tar)) as archive:
        return {
            "/" + m.name: hashlib.sha256(archive.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile() and m.name.startswith("opt/app/")
        }


@contextmanager
def _container(stack: Stack, ref: str) -> Iterator[str]:
    name = "soak-" + secrets.token_hex(4)
    mount = f"type=bind,src={BUSYBOX},dst=/busybox,options=rbind:ro"
    stack.containerd.ctr(
        "run", "-d", "--snapshotter", "soci", "--mount", mount, ref, name, "/busybox", "sleep", "3600", timeout=300
    )
    try:
        yield name
    finally:
        stack.containerd.ctr("task", "kill", "-s", "SIGKILL", name, check=False)
        wait_until(lambda: stack.containerd.ctr("task", "delete", name, check=False).returncode == 0, 60)
        stack.containerd.ctr("container", "delete", name, check=False)


def _read_round(stack: Stack, container: str, expected: dict[str, str]) -> list[str]:
    """sha256 of ``expected``'s files inside ``container``; the failures, one line each."""
    try:
        result = stack.containerd.ctr(
            "task", "exec", "--exec-id", "x" + secrets.token_hex(4), container,
            "/busybox", "sha256sum", *sorted(expected), timeout=300, check=False,
        )  # fmt: skip
    except Exception as e:  # a timed out or failed exec is a failed read, counted
        return [f"{container}: {path}: {e}" for path in expected]
    got = {}
    for line in result.stdout.splitlines():
        digest, _, path = line.partition("  ")
        got[path] = digest
    error = result.stderr.strip()[:200]
    return [f"{container}: {p}: {got.get(p, error)}" for p in expected if got.get(p) != expected[p]]


def soak(registry: RegistryServer, workdir: Path, containers: int, images: int) -> SoakResult:
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} (static busybox) is needed to read files inside the containers")
    started = time.monotonic()
    with stack_running(workdir / "stack", registry, mounter=FUSE_MOUNTER) as stack:
        built = []
        for n in range(images):
            src = push_image(registry, workdir / f"img{n}", f"soak/app{n}", f"t{secrets.token_hex(4)}", seed=300 + n)
            image = convert(workdir / "soci", src, f"{src.ref.rsplit(':', 1)[1]}-soci")
            stack.rpull(image.ref)
            built.append((image.ref, _layer_files(image)))
        fds_before = process_fds(stack.daemon.pid)
        rss_before_kib = process_rss_kib(stack.daemon.pid)
        samples = Samples()
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                if stack.daemon.running:
                    try:
                        pid = stack.daemon.pid
                        rss, fds = process_rss_kib(pid), process_fds(pid)
                    except (OSError, AssertionError):
                        pass  # the daemon exited (or is being started) between the check and the reads
                    else:
                        samples.rss_kib.append(rss)
                        samples.fds.append(fds)
                        samples.pids.add(pid)
                done.wait(0.2)

        first_round = threading.Barrier(containers + 1)
        killed = threading.Event()
        failures: list[str] = []
        reads = 0
        lock = threading.Lock()

        def worker(index: int) -> None:
            nonlocal reads
            ref, files = built[index % len(built)]
            paths = sorted(files)
            offset = (index * FILES_PER_ROUND) % max(1, len(paths) - ROUNDS * FILES_PER_ROUND)
            try:
                with _container(stack, ref) as name:
                    for round_ in range(ROUNDS):
                        if round_ == 1:
                            first_round.wait(timeout=900)
                            killed.wait(timeout=900)
                        start = offset + round_ * FILES_PER_ROUND
                        batch = {p: files[p] for p in paths[start : start + FILES_PER_ROUND]}
                        bad = _read_round(stack, name, batch)
                        with lock:
                            reads += len(batch)
                            failures.extend(bad)
            except Exception as e:  # a container that did not start or stop is a failure
                with lock:
                    failures.append(f"container {index}: {type(e).__name__}: {e}")
                first_round.abort()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(containers) as pool:
            futures = [pool.submit(worker, i) for i in range(containers)]
            first_round.wait(timeout=900)
            # a short first round can end before the sampler thread (competing with the workers for the GIL)
            # has looked at this daemon: wait for one sample of it, so the figures cover both daemons
            first_pid = stack.daemon.pid
            assert wait_until(lambda: first_pid in samples.pids, 30), "the sampler never saw the first daemon"
            assert stack.daemon.stop(signal.SIGKILL) is not None
            down = time.monotonic()
            killed.set()
            time.sleep(1.0)  # let the second round's reads start against no daemon
            stack.restart_daemon()
            gap_ms = (time.monotonic() - down) * 1000
            for future in futures:
                future.result()
        second_pid = stack.daemon.pid
        assert wait_until(lambda: second_pid in samples.pids, 30), "the sampler never saw the restarted daemon"
        done.set()
        sampler.join()
        fds_after = process_fds(stack.daemon.pid)
        return SoakResult(
            containers=containers,
            images=images,
            reads=reads,
            failures=failures,
            fds_before=fds_before,
            rss_before_kib=rss_before_kib,
            fds_after=fds_after,
            peak_rss_kib=max(samples.rss_kib, default=0),
            peak_fds=max(samples.fds, default=0),
            daemons_sampled=len(samples.pids),
            restart_gap_ms=gap_ms,
            wall_sec=time.monotonic() - started,
        )

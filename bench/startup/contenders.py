"""The snapshotters being compared. Each run gets fresh processes and state directories.

A contender converts the workload's image once (``prepare``, outside the timed part), then per run starts its
services, pulls (timed), and starts the container (timed until the ready line). More columns (upstream SOCI,
load-order documents) are more subclasses registered in ``CONTENDERS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workloads import Workload

from soci.containerd.testing import ContainerdServer, cri_plugin_config
from soci.daemon.testing import SnapshotterProcess
from soci.formats import load_order as lo
from soci.testing.registry_server import RegistryServer, write_hosts_toml

REPO = Path(__file__).resolve().parents[2]
SOCI = str(REPO / ".venv" / "bin" / "soci")
CRICTL = REPO / ".work" / "cache" / "bin" / "crictl"  # scripts/build-crictl.sh
STARGZ_BIN = Path(__file__).resolve().parent / ".cache" / "bin"
DAEMON_LOG_LEVEL = os.environ.get("SOCI_BENCH_LOG_LEVEL", "info")
"""The timed runs' daemon log level (``debug`` shows, among others, the reads a load order document missed)."""


def sh(*args: str, timeout: float = 1800) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {(result.stderr or result.stdout)[-1500:]}")
    return result.stdout


def peak_rss_kib(pid: int, *, descendants: bool = False) -> int:
    """Peak RSS (VmHWM) of the process, plus its descendants' with ``descendants`` (a snapshotter's helpers, such
    as our FUSE descriptor holder; not containerd's, whose descendants are the shims and the workload itself)."""
    total, pending = 0, [pid]
    while pending:
        proc = Path(f"/proc/{pending.pop()}")
        try:
            status = (proc / "status").read_text()
            for children in proc.glob("task/*/children") if descendants else ():
                pending += [int(child) for child in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return total


@dataclass
class Bench:
    """What every contender shares in one harness run."""

    registry: RegistryServer
    pull_host: str
    """host:port that clients pull from (the shaped proxy in front of the registry)."""
    work: Path
    converted: set[tuple[str, ...]] = field(default_factory=set)
    load_orders: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per workload: the recorded load order document's size, segments and fetch points."""
    """(repository, tag, convert flags) already converted in this run."""


@dataclass
class Timing:
    pull_s: float
    ready_s: float
    """From the start of the pull to the ready line."""
    rss_kib: int
    bytes_at_ready: int
    output_tail: str


class Contender:
    name = ""
    snapshotter = "overlayfs"
    ctr_command = "ctr"
    namespace = "default"
    """containerd namespace the pull leaves the image in (CRI's is ``k8s.io``)."""

    def prepare(self, bench: Bench, w: Workload, repo: str) -> None:
        """Make this contender's image variant of ``{registry}/{repo}:latest`` (untimed)."""

    def ref(self, bench: Bench, repo: str) -> str:
        return f"{bench.pull_host}/{repo}:latest"

    def services(self, run_dir: Path) -> tuple[ContainerdServer, SnapshotterProcess | subprocess.Popen[bytes] | None]:
        return ContainerdServer(run_dir / "containerd"), None

    def pull(self, containerd: ContainerdServer, ref: str) -> None:
        containerd.ctr("images", "pull", "--plain-http", ref, timeout=1800)

    def check_lazy(self, daemon_log: str) -> None:
        """Raise if a lazy contender fell back to a full pull."""

    def run(
        self, bench: Bench, w: Workload, repo: str, run_dir: Path, at_ready: Callable[[], int], timeout: float = 600
    ) -> Timing:
        containerd, daemon = self.services(run_dir)
        ref = self.ref(bench, repo)
        try:
            if isinstance(daemon, SnapshotterProcess):
                daemon.start()
            containerd.proxy_plugins = self.plugins(daemon, run_dir)
            containerd.start()
            server_pid = containerd.pid if daemon is None else daemon.pid
            start = time.perf_counter()
            self.pull(containerd, ref)
            pulled = time.perf_counter()
            tail = self._run_until_ready(containerd, ref, w, timeout)
            ready = time.perf_counter()
            fetched = at_ready()
            rss = peak_rss_kib(server_pid, descendants=daemon is not None)
        finally:
            containerd.stop()
            self.stop_daemon(daemon)
        self.check_lazy(self.daemon_log(run_dir, daemon))
        return Timing(
            pull_s=pulled - start, ready_s=ready - start, rss_kib=rss, bytes_at_ready=fetched, output_tail=tail
        )

    def plugins(self, daemon: object, run_dir: Path) -> dict[str, Path]:
        return {}

    def stop_daemon(self, daemon: object) -> None:
        if isinstance(daemon, SnapshotterProcess):
            daemon.stop(signal.SIGINT)  # SIGINT unmounts; SIGTERM keeps mounts for a restart

    def daemon_log(self, run_dir: Path, daemon: object) -> str:
        return daemon.log_path.read_text(errors="replace") if isinstance(daemon, SnapshotterProcess) else ""

    def _run_until_ready(self, containerd: ContainerdServer, ref: str, w: Workload, timeout: float) -> str:
        # runc keeps its state per host, not per containerd: a fixed ID collides with any other run on the machine
        container_id = f"bench-{os.getpid()}-{time.monotonic_ns()}"
        args = [self.ctr_command, "-a", containerd.address, "-n", self.namespace, "run"]
        args += ["--snapshotter", self.snapshotter, ref, container_id]
        args += w.command
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if w.ready in line:
                    return "\n".join(lines[-5:])
                if time.monotonic() > deadline:
                    break
            code = process.wait(30)
            shown = " | ".join(lines[-10:])
            raise RuntimeError(f"{self.name}: no ready line {w.ready!r} (ctr exit {code}); output: {shown}")
        finally:
            if process.poll() is None:
                containerd.ctr("-n", self.namespace, "task", "kill", "-s", "SIGKILL", container_id, check=False)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class Overlayfs(Contender):
    name = "overlayfs"


class SociLazy(Contender):
    name = "soci"
    snapshotter = "soci"
    tag = "soci"
    daemon_config: str | None = None
    metadata = "erofs"
    """Who answers layer metadata: "erofs" (the daemon's default where the kernel mounts EROFS file-backed,
    checked in its log) or "fuse" (the FUSE tree, forced by ``daemon_config``)."""

    def prepare(self, bench: Bench, w: Workload, repo: str) -> None:
        host = bench.registry.host
        flags = self.convert_args(bench, w, repo)
        done = (repo, self.tag, *flags)
        if done in bench.converted:  # soci-fuse uses soci's index (same tag)
            return
        bench.converted.add(done)
        sh(
            SOCI,
            "--root",
            str(bench.work / f"convert-{self.tag}"),
            "convert",
            "--remote",
            "--plain-http",
            "--quiet",
            "--min-layer-size",
            "0",
            *flags,
            f"{host}/{repo}:latest",
            f"{host}/{repo}:{self.tag}",
        )

    def convert_args(self, bench: Bench, w: Workload, repo: str) -> list[str]:
        return []

    def ref(self, bench: Bench, repo: str) -> str:
        return f"{bench.pull_host}/{repo}:{self.tag}"

    def services(self, run_dir: Path) -> tuple[ContainerdServer, SnapshotterProcess | subprocess.Popen[bytes] | None]:
        daemon = SnapshotterProcess(run_dir / "daemon", log_level=DAEMON_LOG_LEVEL, config=self.daemon_config)
        return ContainerdServer(run_dir / "containerd"), daemon

    def plugins(self, daemon: object, run_dir: Path) -> dict[str, Path]:
        assert isinstance(daemon, SnapshotterProcess)
        return {"soci": daemon.socket}

    def pull(self, containerd: ContainerdServer, ref: str) -> None:
        sh(SOCI, "--address", containerd.address, "image", "rpull", "--plain-http", ref)

    def check_lazy(self, daemon_log: str) -> None:
        # upstream's log message for a layer served remotely; its absence means every layer was pulled in full
        if "remote snapshot successfully prepared" not in daemon_log:
            raise RuntimeError(f"{self.name}: the daemon prepared no remote snapshot (silent fallback to a full pull)")
        if self.metadata == "erofs" and "layer metadata served by EROFS" not in daemon_log:
            raise RuntimeError(f"{self.name}: the layers were not served through EROFS (the FUSE tree instead)")


class SociPrefetch(SociLazy):
    """The lazy path plus a SOCI prefetch artifact listing the files the workload opens."""

    name = "soci+prefetch"
    tag = "soci-prefetch"
    daemon_config = "[prefetch]\nenable = true\n"

    def convert_args(self, bench: Bench, w: Workload, repo: str) -> list[str]:
        listing = bench.work / f"{repo.replace('/', '_')}-prefetch.json"
        listing.write_text(json.dumps(accessed_files(bench, w, repo)))
        return ["--prefetch-files-json", str(listing)]


class SociLoadOrder(SociLazy):
    """The lazy path plus the workload's load order document (LOD), recorded once through containerd with the
    daemon in recording mode (unshaped, untimed), pushed as a referrer of the image, selected at pull time with
    ``soci image rpull --load-order`` and replayed by the daemon when the layers mount."""

    name = "soci+lod"
    tag = "soci-lod"
    lod_name = "bench"

    def prepare(self, bench: Bench, w: Workload, repo: str) -> None:
        super().prepare(bench, w, repo)
        record = bench.work / f"record-{repo.replace('/', '_')}"
        shutil.rmtree(record, ignore_errors=True)
        daemon = SnapshotterProcess(record / "daemon", log_level="info", config="[load_order]\nrecord = true\n")
        with daemon:
            try:
                with ContainerdServer(record / "containerd", proxy_plugins={"soci": daemon.socket}) as containerd:
                    out = sh(
                        SOCI, "--root", str(daemon.root), "--address", containerd.address, "load-order", "record",
                        "--plain-http", "--name", self.lod_name, "--ready-line", w.ready, "--timeout", "600",
                        "-o", str(record / "lod.json"), "--push", f"{bench.registry.host}/{repo}:{self.tag}",
                        "--", *w.command,
                    )  # fmt: skip
                    containerd.stop()
            finally:
                daemon.stop(signal.SIGINT)
        print(next((ln for ln in out.splitlines() if ln.startswith("recorded ")), out.strip()[-300:]), flush=True)
        document = (record / "lod.json").read_bytes()
        layers = json.loads(document)["layers"]
        # as pushed: the JSON without the zTOC metadata, which goes in the artifact's second layer
        bare, metadata = lo.split_ztoc_metadata(lo.parse(document))
        bench.load_orders[w.name] = {
            "bytes": len(lo.marshal(bare)),
            "ztoc_metadata_bytes": len(metadata),
            "recorded_bytes": len(document),
            "segments": sum(len(layer["segments"]) for layer in layers),
            "fetch_points": sum(len(layer.get("fetch_points", ())) for layer in layers),
        }
        print(f"load order document: {bench.load_orders[w.name]}", flush=True)
        shutil.rmtree(record, ignore_errors=True)

    def pull(self, containerd: ContainerdServer, ref: str) -> None:
        sh(SOCI, "--address", containerd.address, "image", "rpull", "--plain-http", "--load-order", self.lod_name, ref)

    def check_lazy(self, daemon_log: str) -> None:
        super().check_lazy(daemon_log)
        if "replayed on layer" not in daemon_log:
            raise RuntimeError(f"{self.name}: the daemon replayed no load order")
        # the document carries zTOC metadata (recorded with the defaults): a layer that fetched its zTOC instead
        # waited for it, a silent slow path
        if "mounts from the load order document's zTOC metadata" not in daemon_log:
            raise RuntimeError(f"{self.name}: no layer mounted from the document's zTOC metadata")


class SociLoadOrderCri(SociLoadOrder):
    """soci+lod pulled as a Kubernetes node pulls: ``crictl pull`` to containerd's CRI plugin, which prepares the
    layers with CRI's labels; the daemon picks the document by its ``[load_order] default`` (no client passes a
    label) and reads the registry's plain-HTTP endpoint from a ``hosts.toml``. No Python client in the timed pull."""

    name = "soci+lod-cri"
    namespace = "k8s.io"
    daemon_config = f'[load_order]\ndefault = "{SociLoadOrder.lod_name}"\n'

    def services(self, run_dir: Path) -> tuple[ContainerdServer, SnapshotterProcess | subprocess.Popen[bytes] | None]:
        if not CRICTL.is_file():
            raise RuntimeError(f"{self.name}: no {CRICTL}; run scripts/build-crictl.sh (needs Go)")
        hosts, cni = run_dir / "certs.d", run_dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        env = {"SOCI_SNAPSHOTTER_HOSTS_DIR": str(hosts)}
        daemon = SnapshotterProcess(run_dir / "daemon", log_level=DAEMON_LOG_LEVEL, config=self.daemon_config, env=env)
        cri = cri_plugin_config(sandbox_image="pause.invalid/pause:none", cni_dir=cni, hosts_dir=hosts)
        return ContainerdServer(run_dir / "containerd", cri_config=cri), daemon

    def pull(self, containerd: ContainerdServer, ref: str) -> None:
        run_dir = containerd.workdir.parent
        host = ref.split("/", 1)[0]
        write_hosts_toml(run_dir / "certs.d", host, server=f"http://{host}", mirrors=[f"http://{host}"])
        config = run_dir / "crictl.yaml"  # never the machine's /etc/crictl.yaml
        config.write_text(
            f"runtime-endpoint: unix://{containerd.address}\nimage-endpoint: unix://{containerd.address}\n"
        )
        sh(str(CRICTL), "--config", str(config), "pull", ref)


class SociFuseTree(SociLazy):
    """The lazy path with layer metadata answered by the FUSE tree in Python instead of the kernel's EROFS: the
    daemon's fallback on kernels without file-backed EROFS (``[fuse] metadata = "fuse"``)."""

    name = "soci-fuse"
    daemon_config = '[fuse]\nmetadata = "fuse"\n'
    metadata = "fuse"


class SociNoNeighbours(SociLazy):
    """The lazy path without fetching the span after each miss (``[blob] neighbour_spans = 0``)."""

    name = "soci-no-neighbours"
    daemon_config = "[blob]\nneighbour_spans = 0\n"


class SociSmallSpans(SociLazy):
    """The lazy path with 1 MiB spans instead of 4 MiB: fewer bytes fetched around each small read."""

    name = "soci-1MiB-spans"
    tag = "soci-1m"

    def convert_args(self, bench: Bench, w: Workload, repo: str) -> list[str]:
        return ["--span-size", str(1 << 20)]


def accessed_files(bench: Bench, w: Workload, repo: str) -> list[str]:
    """Regular files the workload opens, recorded with strace in a chroot of the unpacked image."""
    import images

    rootfs = images.CACHE / "unpacked" / f"{w.name}-{images.cache_key(w)}"
    if not rootfs.exists():
        tmp = rootfs.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        sh("umoci", "raw", "unpack", "--image", f"{images.build_image(w)}:latest", str(tmp))
        tmp.rename(rootfs)
    # the workloads write only under /tmp (postgres: its new cluster); start from the image's empty /tmp
    for leftover in (rootfs / "tmp").iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
    trace = bench.work / "strace.txt"
    # servers (postgres) never exit: stop the traced process group at the ready line, or after 10 minutes
    traced = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=open,openat,execve", "-o", str(trace), "chroot", str(rootfs), *w.command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    timer = threading.Timer(600, os.killpg, (traced.pid, signal.SIGKILL))
    timer.start()
    try:
        assert traced.stdout is not None
        for raw in traced.stdout:
            if w.ready in raw.decode(errors="replace"):
                break
    finally:
        timer.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(traced.pid, signal.SIGKILL)
        traced.wait()
    found: dict[str, None] = {}
    for line in trace.read_text(errors="replace").splitlines():
        m = re.search(r'(?:openat\([^,]+, |open\(|execve\()"([^"]+)"', line)
        if m and "= -1" not in line and m.group(1).startswith("/"):
            resolved = _resolve_in(rootfs, m.group(1))
            if resolved is not None:
                found[resolved] = None
    return list(found)


def _resolve_in(rootfs: Path, path: str) -> str | None:
    """``path`` as a regular file of the image, symlinks followed inside ``rootfs`` (libraries are opened by
    their soname links, and only the target's bytes are in the layer); None for anything else."""
    current = "/"
    parts = [p for p in path.split("/") if p]
    for _ in range(64):  # symlink hops
        if not parts:
            break
        part = parts.pop(0)
        candidate = os.path.normpath(os.path.join(current, part))
        host = rootfs / candidate.lstrip("/")
        if host.is_symlink():
            target = os.readlink(host)
            parts = [p for p in target.split("/") if p] + parts
            current = "/" if target.startswith("/") else current
        else:
            current = candidate
    else:
        return None
    return current if (rootfs / current.lstrip("/")).is_file() and not parts else None


class Stargz(Contender):
    """stargz-snapshotter with images converted by ``ctr-remote images optimize`` (records the workload's reads)."""

    name = "stargz"
    snapshotter = "stargz"

    def prepare(self, bench: Bench, w: Workload, repo: str) -> None:
        host = bench.registry.host
        with ContainerdServer(bench.work / "optimize-containerd") as containerd:
            remote = str(STARGZ_BIN / "ctr-remote")
            base = ["-a", containerd.address]
            sh(remote, *base, "images", "pull", "--plain-http", f"{host}/{repo}:latest")
            entry, *argv = w.command
            sh(
                remote,
                *base,
                "images",
                "optimize",
                "--oci",
                f"--entrypoint={json.dumps([entry])}",
                f"--args={json.dumps(argv)}",
                f"{host}/{repo}:latest",
                f"{host}/{repo}:esgz",
            )
            sh(remote, *base, "images", "push", "--plain-http", f"{host}/{repo}:esgz")
        shutil.rmtree(bench.work / "optimize-containerd", ignore_errors=True)

    def ref(self, bench: Bench, repo: str) -> str:
        return f"{bench.pull_host}/{repo}:esgz"

    def services(self, run_dir: Path) -> tuple[ContainerdServer, SnapshotterProcess | subprocess.Popen[bytes] | None]:
        (run_dir / "stargz").mkdir(parents=True, exist_ok=True)
        socket_path = run_dir / "stargz" / "stargz.sock"
        log = (run_dir / "stargz" / "daemon.log").open("ab")
        daemon = subprocess.Popen(
            [
                str(STARGZ_BIN / "containerd-stargz-grpc"),
                "--address",
                str(socket_path),
                "--root",
                str(run_dir / "stargz" / "root"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not socket_path.is_socket():
            if daemon.poll() is not None or time.monotonic() > deadline:
                daemon.kill()
                daemon.wait()
                raise RuntimeError(f"containerd-stargz-grpc did not start; see {run_dir / 'stargz' / 'daemon.log'}")
            time.sleep(0.05)
        return ContainerdServer(run_dir / "containerd"), daemon

    def plugins(self, daemon: object, run_dir: Path) -> dict[str, Path]:
        return {"stargz": run_dir / "stargz" / "stargz.sock"}

    def pull(self, containerd: ContainerdServer, ref: str) -> None:
        sh(str(STARGZ_BIN / "ctr-remote"), "-a", containerd.address, "images", "rpull", "--plain-http", ref)

    def stop_daemon(self, daemon: object) -> None:
        if isinstance(daemon, subprocess.Popen):
            daemon.send_signal(signal.SIGINT)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def run(
        self, bench: Bench, w: Workload, repo: str, run_dir: Path, at_ready: Callable[[], int], timeout: float = 600
    ) -> Timing:
        try:
            return super().run(bench, w, repo, run_dir, at_ready, timeout)
        finally:
            # the daemon's FUSE mounts live under its root; never leave one behind
            for line in Path("/proc/mounts").read_text().splitlines():
                point = line.split()[1]
                if point.startswith(str(run_dir)):
                    subprocess.run(["umount", "-l", point], check=False)


UPSTREAM_DAEMON = REPO / "interop" / ".cache" / "bin" / "soci-snapshotter-grpc"
CONTAINERD2_BIN = REPO / "interop" / ".cache" / "containerd2" / "bin"


class UpstreamDaemon(SnapshotterProcess):
    """Upstream's unmodified soci-snapshotter-grpc (v0.16.1, built by interop/build.sh)."""

    def command(self) -> list[str]:
        args = [str(UPSTREAM_DAEMON), "--address", str(self.socket), "--root", str(self.root)]
        args += ["--log-level", self.log_level]
        if self.config is not None:
            config_path = self.workdir / "config.toml"
            config_path.write_text(self.config)
            args += ["--config", str(config_path)]
        return args


class Containerd2(ContainerdServer):
    """containerd 2.x from interop/build.sh: upstream's daemon needs the namespace that containerd 1.6 does not
    pass to proxy snapshotters. Its ctr and runc shim come from the same build."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, bin_dir=CONTAINERD2_BIN)

    def config_text(self) -> str:
        text = super().config_text().replace("version = 2", "version = 3", 1)
        return text.replace(
            '"io.containerd.grpc.v1.cri"]',
            '"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]',
        )


class UpstreamSoci(SociLazy):
    """Upstream SOCI's daemon on the same SOCI index as ``soci`` (our zTOCs are byte-identical to upstream's),
    pulled with our rpull (the labels upstream's clients pass) through containerd 2.x.
    Needs ``interop/build.sh soci-snapshotter-grpc containerd2`` first."""

    name = "upstream"
    tag = "soci-upstream"
    ctr_command = str(CONTAINERD2_BIN / "ctr")
    pull_host = ""

    def prepare(self, bench: Bench, w: Workload, repo: str) -> None:
        for tool in (UPSTREAM_DAEMON, CONTAINERD2_BIN / "containerd"):
            if not tool.exists():
                raise RuntimeError(f"{tool} is missing; run interop/build.sh soci-snapshotter-grpc containerd2")
        self.pull_host = bench.pull_host
        super().prepare(bench, w, repo)

    def services(self, run_dir: Path) -> tuple[ContainerdServer, SnapshotterProcess | subprocess.Popen[bytes] | None]:
        # plain HTTP to the benchmark's proxy; upstream reads a mirror host as a URL
        config = f'[[resolver.host."{self.pull_host}".mirrors]]\nhost = "http://{self.pull_host}"\ninsecure = true\n'
        daemon = UpstreamDaemon(run_dir / "daemon", log_level="info", config=config)
        return Containerd2(run_dir / "containerd"), daemon


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c
    for c in (
        Overlayfs,
        SociLazy,
        SociFuseTree,
        SociPrefetch,
        SociLoadOrder,
        SociLoadOrderCri,
        Stargz,
        UpstreamSoci,
        SociSmallSpans,
        SociNoNeighbours,
    )
}

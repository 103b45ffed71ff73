"""The README's main job: a container that starts before its image is downloaded.

Brings up a local stack (Debian's docker-registry on loopback, containerd with the soci proxy plugin, the
soci-snapshotter-grpc daemon), pushes a real image built from Debian packages, converts it with
`soci convert --remote`, then starts the same container twice, each from a cold cache:
  lazy:  soci image rpull + ctr run --snapshotter soci
  full:  ctr images pull   + ctr run (overlayfs)
and prints both times and what each fetched from the registry. Everything it started is stopped on exit.

Usage: .venv/bin/python scripts/demo.py IMAGE_LAYOUT_DIR WORK_DIR
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess
from soci.testing.registry_server import RegistryServer

REPO = Path(__file__).resolve().parent.parent
SOCI = str(REPO / ".venv" / "bin" / "soci")
COMMAND = ["python3", "-c", "import numpy, scipy.linalg; print('READY', numpy.__version__, scipy.__version__)"]


def run(*args: str, quiet: bool = True) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args)} failed:\n{result.stderr.strip() or result.stdout.strip()}")
    if not quiet:
        print(result.stdout, end="")
    return result.stdout


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def blob_bytes(registry: RegistryServer, since: int) -> int:
    """Bytes of blob responses the registry sent after log offset ``since``."""
    total = 0
    with registry.log_path.open() as log:
        log.seek(since)
        for line in log:
            if 'msg="response completed' in line and "/blobs/" in line:
                m = re.search(r"http\.response\.written=(\d+)", line)
                total += int(m.group(1)) if m else 0
    return total


def main() -> None:
    layout, work = Path(sys.argv[1]).absolute(), Path(sys.argv[2]).absolute()
    work.mkdir(parents=True, exist_ok=True)
    with RegistryServer(workdir=work / "registry") as registry:
        ref = f"{registry.host}/demo/python:latest"
        lazy_ref = f"{registry.host}/demo/python:soci"
        print(f"== registry at {registry.url} (pid {registry.pid}); pushing the image")
        run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}")
        print("== soci convert --remote (registry to registry, no containerd)")
        start = time.perf_counter()
        run(SOCI, "--root", str(work / "convert-root"), "convert", "--remote", "--plain-http", "--quiet",
            "--min-layer-size", "0", ref, lazy_ref)  # fmt: skip
        print(f"converted in {time.perf_counter() - start:.1f} s")

        results = {}
        for mode in ("lazy", "full"):
            drop_caches()
            with SnapshotterProcess(work / f"daemon-{mode}", log_level="info") as daemon, ContainerdServer(
                work / f"containerd-{mode}", proxy_plugins={"soci": daemon.socket}
            ) as containerd:
                print(f"== {mode}: containerd pid {containerd.pid}, soci-snapshotter-grpc pid {daemon.pid}")
                offset = registry.log_path.stat().st_size
                start = time.perf_counter()
                if mode == "lazy":
                    run(SOCI, "--address", containerd.address, "image", "rpull", "--plain-http", lazy_ref)
                    pulled = time.perf_counter()
                    out = containerd.ctr("run", "--rm", "--snapshotter", "soci", lazy_ref, "demo-lazy", *COMMAND)
                else:
                    containerd.ctr("images", "pull", "--plain-http", ref)
                    pulled = time.perf_counter()
                    out = containerd.ctr("run", "--rm", ref, "demo-full", *COMMAND)
                done = time.perf_counter()
                if "READY" not in out.stdout:
                    raise SystemExit(f"demo: the {mode} container did not print READY: {out.stdout!r}")
                results[mode] = (pulled - start, done - start, blob_bytes(registry, offset))
                print(f"   {out.stdout.strip()}")
                containerd.stop()
                daemon.stop(signal.SIGINT)  # SIGINT: unmount and clean up (SIGTERM would keep mounts for a restart)
    print()
    print(f"{'':6} {'pull':>8} {'start→READY':>12} {'blob bytes fetched':>20}")
    for mode, (pull, total, fetched) in results.items():
        print(f"{mode:6} {pull:7.2f}s {total:11.2f}s {fetched / 1e6:17.1f} MB")
    lazy, full = results["lazy"][1], results["full"][1]
    print(f"\nlazy start took {lazy:.2f} s against {full:.2f} s for a full pull ({lazy / full:.2f}x)")


if __name__ == "__main__":
    main()

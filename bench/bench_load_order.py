"""Time to READY of a python-ml workload: plain lazy loading against lazy + its load order document (LOD)
and lazy + the SOCI prefetch artifacts exported from that LOD.

Stack: Debian's docker-registry on loopback (its port shaped with tc htb, default 100 Mbit/s), containerd
with the soci proxy plugin, soci-snapshotter-grpc. Image: Debian bookworm + python3, numpy, scipy
(scripts/build-debian-image.sh, cached), converted with `soci convert --remote`. Workload:
`python3 -c 'import numpy, scipy.linalg; print("READY")'`.

1. record: a daemon with `[load_order] record = true` runs the workload once (unshaped) through
   `soci load-order record --push`; `soci load-order export` pushes an index copy with prefetch artifacts.
2. measure: for each run and mode (interleaved), page cache dropped, a fresh daemon root and containerd
   (cold span cache), shaped registry: rpull + ctr run until the workload exits; time from rpull to exit.
Prints every run, the medians and the ratios against plain lazy in the same run. The image and its layers
are never changed (digests are checked before and after).

Usage: .venv/bin/python bench/bench_load_order.py [--runs 3] [--rate-mbit 100] [--span-size BYTES] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess
from soci.testing.registry_server import RegistryServer

REPO = Path(__file__).resolve().parent.parent
SOCI = str(REPO / ".venv" / "bin" / "soci")
PACKAGES = "python3 python3-numpy python3-scipy"
COMMAND = ["python3", "-c", "import numpy, scipy.linalg; print('READY')"]
NAME = "python-ml"
MODES = ("lazy", "lazy+lod", "lazy+prefetch")


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed:\n{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Shaper:
    """tc htb on lo: traffic from ``port`` limited to ``rate_mbit``; removed on exit."""

    def __init__(self, port: int, rate_mbit: int) -> None:
        self.port, self.rate_mbit = port, rate_mbit

    def __enter__(self) -> Shaper:
        # another benchmark may be shaping lo: wait for it rather than replace (or later delete) its qdisc
        deadline = time.monotonic() + 1800
        while "htb" in (shown := subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True,
                                                 text=True).stdout):  # fmt: skip
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: lo is shaped by someone else: {shown.strip()}")
            time.sleep(2)
        for args in (
            ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "99"],
            ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:99", "htb", "rate", "40gbit"],
            ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", f"{self.rate_mbit}mbit",
             "ceil", f"{self.rate_mbit}mbit", "burst", "64k"],
            ["filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
             "sport", str(self.port), "0xffff", "flowid", "1:10"],
        ):  # fmt: skip
            subprocess.run(["tc", *args], check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False, capture_output=True)


def daemon_config(mode: str) -> str:
    if mode == "record":
        return "[load_order]\nrecord = true\n"
    if mode == "lazy+prefetch":
        return "[prefetch]\nenable = true\n"
    return ""


def manifest_digest(ref: str) -> str:
    return run("skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}").strip()


def one_run(work: Path, ref: str, mode: str, index_digest: str) -> float:
    drop_caches()
    root = Path(tempfile.mkdtemp(prefix=f"run-{mode.replace('+', '-')}-", dir=work))
    with SnapshotterProcess(root / "daemon", config=daemon_config(mode), log_level="info") as daemon:
        try:
            with ContainerdServer(root / "containerd", proxy_plugins={"soci": daemon.socket}) as containerd:
                args = [SOCI, "--address", containerd.address, "image", "rpull", "--plain-http"]
                if mode == "lazy+lod":
                    args += ["--load-order", NAME]
                if mode == "lazy+prefetch":
                    args += ["--soci-index-digest", index_digest]
                start = time.perf_counter()
                run(*args, ref)
                out = containerd.ctr(
                    "run",
                    "--rm",
                    "--snapshotter",
                    "soci",
                    ref,
                    f"lo-bench-{secrets.token_hex(4)}",
                    *COMMAND,
                    timeout=600,
                )
                elapsed = time.perf_counter() - start
                if "READY" not in out.stdout:
                    raise SystemExit(f"bench: {mode}: no READY in {out.stdout!r}")
                containerd.stop()
        finally:
            daemon.stop(signal.SIGINT)
    if mode == "lazy+lod":
        replays = [str(e.get("msg")) for e in daemon.log_entries() if "replayed on layer" in str(e.get("msg"))]
        if not replays:
            raise SystemExit("bench: lazy+lod: the daemon did not replay the load order")
    return elapsed


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate-mbit", type=int, default=100, help="registry bandwidth (0: unshaped)")
    ap.add_argument("--span-size", type=int, default=4 << 20, help="zTOC span size of the index (all modes)")
    ap.add_argument("--work", type=Path, default=REPO / ".work" / "bench-load-order")
    args = ap.parse_args()
    work = args.work.absolute()
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    layout = work / "image"
    env = {**os.environ, "SOCI_IMAGE_PACKAGES": PACKAGES}
    run("bash", str(REPO / "scripts" / "build-debian-image.sh"), str(layout), env=env)
    with RegistryServer(workdir=work / "registry") as registry:
        src, ref = f"{registry.host}/bench/python-ml:latest", f"{registry.host}/bench/python-ml:soci"
        run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{src}")
        run(SOCI, "--root", str(work / "convert-root"), "convert", "--remote", "--plain-http", "--quiet",
            "--min-layer-size", "0", "--span-size", str(args.span_size), src, ref)  # fmt: skip
        image_before = manifest_digest(ref)

        # 1. record (unshaped) and export
        drop_caches()
        with SnapshotterProcess(work / "record" / "daemon", config=daemon_config("record"), log_level="info") as daemon:
            try:
                with ContainerdServer(work / "record" / "containerd", proxy_plugins={"soci": daemon.socket}) as ctrd:
                    out = run(SOCI, "--root", str(daemon.root), "--address", ctrd.address, "load-order", "record",
                              "--plain-http", "--name", NAME, "--ready-line", "READY", "--timeout", "300",
                              "-o", str(work / f"{NAME}.json"), "--push", ref, "--", *COMMAND)  # fmt: skip
                    ctrd.stop()
            finally:
                daemon.stop(signal.SIGINT)
        print(next((line for line in out.splitlines() if line.startswith("recorded ")), "recorded"), flush=True)
        exported = run(SOCI, "load-order", "export", "--plain-http", "--name", NAME, ref)
        index_digest = re.search(r"SOCI index (sha256:[0-9a-f]{64})", exported).group(1)  # type: ignore[union-attr]
        print(exported.strip(), flush=True)

        # 2. measure
        print(f"registry port {registry.port}: {args.rate_mbit or 'unshaped'} Mbit/s; span size {args.span_size}; "
              f"{args.runs} runs per mode")  # fmt: skip
        times: dict[str, list[float]] = {m: [] for m in MODES}
        with Shaper(registry.port, args.rate_mbit) if args.rate_mbit else _nothing():
            for i in range(args.runs):
                for mode in MODES:
                    t = one_run(work, ref, mode, index_digest)
                    times[mode].append(t)
                    print(f"run {i + 1} {mode:14} {t:6.2f} s", flush=True)
        if manifest_digest(ref) != image_before:
            raise SystemExit("bench: the image manifest changed")
    base = statistics.median(times["lazy"])
    print()
    print(f"{'mode':14} {'median':>8}  {'speed-up vs lazy':>16}")
    for mode in MODES:
        m = statistics.median(times[mode])
        print(f"{mode:14} {m:7.2f}s  {base / m:15.2f}x")
    print(f"image manifest {image_before} unchanged")


if __name__ == "__main__":
    main()

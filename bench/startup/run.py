"""Container startup benchmark: time from the start of a pull to the workload's ready line, per snapshotter.

    .venv/bin/python bench/startup/run.py [--workloads python-ml,shell] [--contenders overlayfs,soci,...]
        [--runs 5] [--mbit 100] [--delay-ms 20] [--out docs/benchmarks] [--work DIR]

Images are built offline and cached (bench/startup/images.py), pushed to a local docker-registry, converted by
each contender (untimed), then every run starts each contender from nothing (fresh containerd and snapshotter
state, page cache dropped), contenders alternating. Registry traffic passes a delaying proxy and an htb class
(see network.py); the achieved bandwidth and latency are measured and printed first. Writes results.json,
results.md and results.png (chart.py runs in the benchmark's own venv, made by setup.sh from requirements.lock).
Needs root, containerd, runc, docker-registry, skopeo, pigz, umoci, strace; stargz needs build_stargz.sh first.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import CONTENDERS, Bench, Contender, Timing
from images import build_image, compressed_size
from network import DelayProxy, HtbShaper, measure
from report import ensure_venv, write_report
from workloads import WORKLOADS

from soci.testing.registry_server import RegistryServer

REPO = Path(__file__).resolve().parents[2]


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def blob_bytes_since(registry: RegistryServer, offset: int) -> int:
    """Bytes of blob bodies the registry sent since log offset ``offset``."""
    total = 0
    with registry.log_path.open(errors="replace") as log:
        log.seek(offset)
        for line in log:
            if 'msg="response completed' in line and "/blobs/" in line:
                m = re.search(r"http\.response\.written=(\d+)", line)
                total += int(m.group(1)) if m else 0
    return total


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": len([ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("processor")]),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "os": next(
            (
                ln.split("=", 1)[1].strip('"')
                for ln in Path("/etc/os-release").read_text().splitlines()
                if ln.startswith("PRETTY_NAME=")
            ),
            "?",
        ),
        "containerd": subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.strip(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="python-ml,shell")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mbit", type=float, default=100.0, help="registry bandwidth (0: unshaped)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="per-request delay added by the proxy")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "startup" / ".cache" / "work")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a ready line")
    args = parser.parse_args(argv)
    args.work, args.out = args.work.resolve(), args.out.resolve()  # containerd and ctr need absolute paths
    return args


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    workloads = [WORKLOADS[name] for name in args.workloads.split(",") if name]
    contenders: list[Contender] = [CONTENDERS[name]() for name in args.contenders.split(",") if name]
    ensure_venv()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    layouts = {w.name: build_image(w) for w in workloads}
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", *map(shlex.quote, sys.argv)]),
        "machine": machine(),
        "settings": {"runs": args.runs, "mbit": args.mbit, "delay_ms": args.delay_ms},
        "workloads": {},
        "runs": [],
    }
    with RegistryServer(workdir=args.work / "registry") as registry:
        for w in workloads:
            ref = f"{registry.host}/bench/{w.name}:latest"
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    f"oci:{layouts[w.name]}:latest",
                    f"docker://{ref}",
                ],
                check=True,
            )
            results["workloads"][w.name] = {
                "compressed_bytes": compressed_size(layouts[w.name]),
                "command": list(w.command),
                "ready": w.ready,
            }
        proxy = DelayProxy(("127.0.0.1", registry.port), args.delay_ms).start()
        shaper = HtbShaper(proxy.port, args.mbit)
        bench = Bench(registry=registry, pull_host=proxy.host, work=args.work)
        try:
            for w in workloads:
                for c in contenders:
                    print(f"== prepare {c.name} for {w.name}", flush=True)
                    c.prepare(bench, w, f"bench/{w.name}")
            if bench.load_orders:
                results["load_order_documents"] = bench.load_orders
            if args.mbit > 0:
                shaper.start()
            sample = _largest_blob_path(layouts[workloads[0].name], workloads[0].name)
            achieved = measure(registry.host, proxy.host, sample)
            results["network"] = {
                "bandwidth_mbit": round(achieved.bandwidth_mbit, 1),
                "added_latency_ms": round(achieved.latency_ms, 1),
            }
            print(
                f"== network: {achieved.bandwidth_mbit:.1f} Mbit/s, +{achieved.latency_ms:.1f} ms per request "
                f"(asked {args.mbit:g} Mbit/s, {args.delay_ms:g} ms)",
                flush=True,
            )
            if args.mbit > 0 and not 0.7 * args.mbit <= achieved.bandwidth_mbit <= 1.2 * args.mbit:
                raise SystemExit(
                    f"shaped bandwidth {achieved.bandwidth_mbit:.1f} Mbit/s is off the {args.mbit:g} asked"
                )
            if args.delay_ms > 0 and achieved.latency_ms < 0.7 * args.delay_ms:
                raise SystemExit(f"added latency {achieved.latency_ms:.1f} ms is below the {args.delay_ms:g} asked")
            for i in range(args.runs):
                for w in workloads:
                    order = contenders[i % len(contenders) :] + contenders[: i % len(contenders)]
                    for c in order:
                        if shaper.ensure():
                            results["shaping_reinstalled"] = results.get("shaping_reinstalled", 0) + 1
                        try:
                            results["runs"].append(_one_run(bench, c, w.name, i, args.timeout))
                        except RuntimeError as exc:  # a failed start is a result too; the others go on
                            print(f"   {w.name:10} {c.name:14} run {i}: FAILED: {exc}", flush=True)
                            results["runs"].append({"workload": w.name, "contender": c.name, "run": i,
                                                    "error": str(exc)[:500]})  # fmt: skip
                        _save(results, args.out)
        finally:
            shaper.stop()
            proxy.stop()
    return results


def _largest_blob_path(layout: Path, name: str) -> str:
    blobs = sorted((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    return f"/v2/bench/{name}/blobs/sha256:{blobs[-1].name}"


def _one_run(bench: Bench, c: Contender, workload: str, i: int, timeout: float) -> dict[str, Any]:
    w = WORKLOADS[workload]
    run_dir = bench.work / "runs" / f"{workload}-{c.name}-{i}"
    drop_caches()
    offset = bench.registry.log_path.stat().st_size
    at_ready: Callable[[], int] = lambda: blob_bytes_since(bench.registry, offset)  # noqa: E731
    timing: Timing = c.run(bench, w, f"bench/{workload}", run_dir, at_ready, timeout)
    logs = bench.work / "logs" / run_dir.name
    for log in run_dir.glob("*/*.log"):  # daemon and containerd logs, for "where does the time go"
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, logs / f"{log.parent.name}-{log.name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    row = {
        "workload": workload,
        "contender": c.name,
        "run": i,
        "pull_s": round(timing.pull_s, 3),
        "ready_s": round(timing.ready_s, 3),
        "bytes_at_ready": timing.bytes_at_ready,
        "peak_rss_kib": timing.rss_kib,
    }
    print(
        f"   {workload:10} {c.name:14} run {i}: pull {timing.pull_s:6.2f}s  ready {timing.ready_s:6.2f}s  "
        f"{timing.bytes_at_ready / 1e6:7.1f} MB  rss {timing.rss_kib / 1024:6.0f} MiB",
        flush=True,
    )
    return row


def _save(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.time()
    results = run_benchmark(args)
    results["wall_s"] = round(time.time() - start)
    _save(results, args.out)
    write_report(results, args.out)
    print(f"wrote {args.out}/results.json, results.md, results.png")


if __name__ == "__main__":
    main()

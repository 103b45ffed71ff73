"""Lazy pull vs full pull: ``soci image rpull`` (until every layer's snapshot is ready) against
``ctr images pull`` with overlayfs (download + unpack), same image, same loopback registry, same run.

    .venv/bin/python bench/bench_rpull.py [--total-mb 640] [--layers 5] [--runs 1] [--layer-mounter MOD:FACTORY]

The image is synthetic (files of random and compressible bytes, built once and cached under --cache)
and is made SOCI-enabled with ``soci convert --remote``. Each contender gets a fresh containerd (and a
fresh snapshotter daemon) per run. The daemon's lazy filesystem is whatever it is wired with; pass
``--layer-mounter soci.daemon.mounters:fuse`` for the lazy filesystem (``tests/e2e/e2e_mounter.py:factory``
is a non-lazy tmpfs test mounter).
Needs root, containerd, runc, docker-registry, skopeo, pigz.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from soci.cli.image import image
from soci.cli.main import cli
from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess
from soci.testing.registry_server import RegistryServer

FILE_BYTES = 2 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

if "image" not in cli.commands:
    cli.add_command(image)


def _digest_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _write_layer(tar_path: Path, megabytes: int, seed: int) -> None:
    """Files of 2 MiB: two of three random (incompressible), one of three repetitive text."""
    rng = random.Random(seed)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(max(1, megabytes * (1 << 20) // FILE_BYTES)):
            if i % 3:
                data = rng.randbytes(FILE_BYTES)
            else:
                data = (f"layer {seed} line {i} lorem ipsum dolor sit amet\n" * (FILE_BYTES // 40))[
                    :FILE_BYTES
                ].encode()
            info = tarfile.TarInfo(f"opt/layer{seed}/dir{i // 32}/file{i}.bin")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def build_layout(cache: Path, total_mb: int, layers: int) -> Path:
    """An OCI image layout with ``layers`` gzip layers of about ``total_mb`` MiB uncompressed in all."""
    layout = cache / f"rpull-{total_mb}mb-{layers}layers"
    if (layout / "index.json").exists():
        return layout
    staging = Path(tempfile.mkdtemp(dir=cache, prefix="build-"))
    blobs = staging / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    weights = [layers - i + 1 for i in range(layers)]  # bigger layers at the bottom, as in real images
    descriptors, diff_ids = [], []
    for seed, weight in enumerate(weights):
        megabytes = max(1, total_mb * weight // sum(weights))
        tar_path = staging / f"layer{seed}.tar"
        _write_layer(tar_path, megabytes, seed)
        diff_ids.append(_digest_file(tar_path)[0])
        gz_path = staging / f"layer{seed}.tar.gz"
        with gz_path.open("wb") as out:
            subprocess.run(["pigz", "-6", "-c", str(tar_path)], stdout=out, check=True)
        tar_path.unlink()
        digest, size = _digest_file(gz_path)
        gz_path.rename(blobs / digest.split(":")[1])
        descriptors.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        separators=(",", ":"),
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": descriptors,
        },
        separators=(",", ":"),
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (staging / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (staging / "index.json").write_text(json.dumps(index))
    staging.rename(layout)
    return layout


def _soci(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    if result.exit_code != 0:
        raise SystemExit(f"soci {' '.join(args)} failed:\n{result.output}")
    return result.output


def time_overlayfs_pull(workdir: Path, ref: str) -> float:
    with ContainerdServer(workdir / "ctrd-overlay") as containerd:
        start = time.monotonic()
        containerd.ctr("images", "pull", "--plain-http", ref, timeout=1800)
        return time.monotonic() - start


def time_rpull(workdir: Path, ref: str, mounter: str) -> tuple[float, str]:
    env = {}
    if mounter:
        target, _, factory = mounter.partition(":")
        if target.endswith(".py"):  # a file: import it by name from its directory
            env["PYTHONPATH"] = os.pathsep.join([str(Path(target).resolve().parent), *sys.path])
            target = Path(target).stem
        env["SOCI_SNAPSHOTTER_LAYER_MOUNTER"] = f"{target}:{factory}"
    daemon = SnapshotterProcess(workdir / "daemon", env=env, log_level="info").start()
    try:
        with ContainerdServer(workdir / "ctrd-soci", proxy_plugins={"soci": daemon.socket}) as containerd:
            start = time.monotonic()
            output = _soci("--address", containerd.address, "image", "rpull", "--plain-http", ref)
            return time.monotonic() - start, output
    finally:
        daemon.stop(signal.SIGINT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-mb", type=int, default=640, help="uncompressed image size (MiB)")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path(".work/bench"))
    parser.add_argument(
        "--layer-mounter", default="", help="MODULE:FACTORY or FILE.py:FACTORY for the daemon's lazy filesystem"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (containerd, mounts)")
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"building or reusing the image ({args.total_mb} MiB, {args.layers} layers) ...", flush=True)
    layout = build_layout(args.cache.resolve(), args.total_mb, args.layers)
    compressed = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    print(f"image: {compressed / 1e6:.0f} MB compressed")

    work = Path(tempfile.mkdtemp(prefix="bench-rpull-"))
    try:
        with RegistryServer(workdir=work / "registry") as registry:
            ref = f"{registry.host}/bench/app:v1"
            subprocess.run(
                ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"],
                check=True,
            )
            soci_ref = f"{registry.host}/bench/app:v1-soci"
            start = time.monotonic()
            _soci("--root", str(work / "soci"), "convert", "--remote", "--plain-http", "--min-layer-size", "0",
                  ref, soci_ref)  # fmt: skip
            print(f"soci convert --remote: {time.monotonic() - start:.1f}s (not part of the comparison)")
            print(f"lazy filesystem: {args.layer_mounter or 'the daemon default'}")
            overlay_times, rpull_times = [], []
            for run in range(args.runs):
                # alternate the order so neither side always gets the warmer page cache
                order = ["overlay", "soci"] if run % 2 == 0 else ["soci", "overlay"]
                for contender in order:
                    run_dir = work / f"run{run}-{contender}"
                    if contender == "overlay":
                        overlay_times.append(time_overlayfs_pull(run_dir, ref))
                        print(f"run {run + 1}: ctr images pull (overlayfs)  {overlay_times[-1]:7.2f}s", flush=True)
                    else:
                        seconds, output = time_rpull(run_dir, soci_ref, args.layer_mounter)
                        rpull_times.append(seconds)
                        modes = sorted({line.split(": ", 1)[1].split(" [")[0] for line in output.splitlines()
                                        if line.startswith("layer ")})  # fmt: skip
                        print(f"run {run + 1}: soci image rpull           {seconds:7.2f}s  layer modes: {modes}",
                              flush=True)  # fmt: skip
            overlay, lazy = statistics.median(overlay_times), statistics.median(rpull_times)
            print()
            print(f"full pull (overlayfs), median of {args.runs}: {overlay:.2f}s")
            print(f"rpull until mounts are ready, median of {args.runs}: {lazy:.2f}s")
            print(f"ratio rpull / full pull: {lazy / overlay:.3f}  (speed-up {overlay / lazy:.1f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
